//! A hostile-input-safe parse of an invoice into a small element tree, with byte spans and
//! line numbers for every element.
//!
//! Refused before anything else: a DOCTYPE (and with it every entity declaration, so no XXE and
//! no entity bomb), input that is not UTF-8, and nesting deeper than [`MAX_DEPTH`]. Checks
//! quick-xml leaves to its caller are done here: characters XML 1.0 forbids, character
//! references to them, undeclared entities, text or a second element outside the root.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::rc::Rc;

use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::name::{NamespaceResolver, QName, ResolveResult};
use quick_xml::parser::{Parser, PiParser};
use quick_xml::Reader;

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Deeper than any valid FA(3) document (which nests about ten levels).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ns: String,
    pub local: String,
    /// As written, with its prefix.
    pub qname: String,
    pub value: String,
    /// For `xsi:type`, the value resolved as a QName: (namespace, local name); `None` when a
    /// prefix in it is not declared.
    pub value_qname: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    /// Shared between the elements of one namespace (most of a document is in one or two); `Rc`:
    /// a tree is built and read on one thread, and its counts need no atomic operations.
    pub ns: Rc<str>,
    /// Borrowed from the document, as are `qname` and (when it is one chunk without a CR or a
    /// reference) `text`: building the tree copies no names and almost no values.
    pub local: &'a str,
    pub qname: &'a str,
    pub attrs: Vec<Attr>,
    /// Where this element's children sit in [`Tree::children`]'s shared list.
    children_at: u32,
    children_len: u32,
    pub parent: Option<usize>,
    /// The element's own character data (entities resolved), all chunks concatenated.
    pub text: Cow<'a, str>,
    /// Byte span of the whole element, `<` of the start tag to `>` of the end tag.
    pub span: (usize, usize),
    /// Byte span of the content between the tags (empty for `<a/>`).
    pub content: (usize, usize),
    pub line: u32,
}

impl Node<'_> {
    /// Whether there is character data other than whitespace directly in this element.
    pub fn has_text(&self) -> bool {
        !self.text.bytes().all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    }

    /// Whether the element has child elements.
    pub fn has_children(&self) -> bool {
        self.children_len > 0
    }
}

/// A hard stop: the document cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    /// `xml.malformed`, `xml.doctype`, `xml.depth`, `xml.utf8`.
    pub code: &'static str,
    pub offset: usize,
    pub line: u32,
    pub detail: String,
}

/// Something wrong but not fatal (processing instructions, discouraged characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNote {
    pub code: &'static str,
    pub line: u32,
    pub detail: String,
    /// The element it occurred in, when known.
    pub node: Option<usize>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Tree<'a> {
    /// `nodes[0]` is the root element.
    pub nodes: Vec<Node<'a>>,
    pub notes: Vec<ParseNote>,
    /// The encoding named in the XML declaration, if any.
    pub declared_encoding: Option<String>,
    /// Every element's children, grouped by parent, in document order (one list for the whole
    /// tree instead of one allocation per element).
    child_list: Vec<usize>,
}

impl<'a> Tree<'a> {
    /// Adds the element a start tag opens, spanning `tag` (`<` to after its `>`) until its end
    /// tag is met, as the last child of `parent`; returns its id. Both readers build with it.
    fn open(&mut self, ns: Rc<str>, qname: &'a str, attrs: Vec<Attr>, parent: Option<usize>, tag: (usize, usize), line: u32) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            ns,
            // After the last ':' (the name is valid, so at most one).
            local: qname.bytes().rposition(|b| b == b':').map_or(qname, |i| &qname[i + 1..]),
            qname,
            attrs,
            children_at: 0,
            children_len: 0,
            parent,
            text: Cow::Borrowed(""),
            span: tag,
            content: (tag.1, tag.1),
            line,
        });
        if let Some(p) = parent {
            self.nodes[p].children_len += 1;
        }
        id
    }
}

impl Tree<'_> {
    /// The child elements of `id`, in document order.
    pub fn children(&self, id: usize) -> &[usize] {
        let n = &self.nodes[id];
        &self.child_list[n.children_at as usize..(n.children_at + n.children_len) as usize]
    }

    /// `/Faktura/Fa/FaWiersz[2]/P_7`: local names, with a 1-based index only where the name
    /// repeats among its siblings. Computed on demand (only findings need it).
    pub fn path(&self, id: usize) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(id);
        while let Some(n) = cur {
            let node = &self.nodes[n];
            match node.parent {
                Some(p) => {
                    let same: Vec<usize> = self
                        .children(p)
                        .iter()
                        .copied()
                        .filter(|&c| self.nodes[c].local == node.local)
                        .collect();
                    if same.len() > 1 {
                        let k = same.iter().position(|&c| c == n).unwrap_or(0) + 1;
                        parts.push(format!("{}[{k}]", node.local));
                    } else {
                        parts.push(node.local.to_string());
                    }
                }
                None => parts.push(node.local.to_string()),
            }
            cur = node.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

/// Byte offset → 1-based line. The table of line starts is built on the first look-up: a valid
/// document never needs it (the parser counts its elements' lines as it goes).
pub struct Lines<'a> {
    bytes: &'a [u8],
    starts: OnceCell<Vec<usize>>,
}

impl<'a> Lines<'a> {
    pub fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            starts: OnceCell::new(),
        }
    }

    pub fn line(&self, offset: usize) -> u32 {
        let starts = self.starts.get_or_init(|| {
            let mut starts = vec![0];
            starts.extend(self.bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1));
            starts
        });
        match starts.binary_search(&offset) {
            Ok(i) => i as u32 + 1,
            Err(i) => i as u32,
        }
    }
}

/// Line feeds in a slice (a loop the compiler vectorises).
fn count_newlines(bytes: &[u8]) -> u32 {
    bytes.iter().map(|&b| u32::from(b == b'\n')).sum()
}

/// Bytes that start a character needing a closer look: ASCII controls other than tab, LF and
/// CR (XML forbids them), DEL, and the UTF-8 lead bytes of the only ranges holding characters
/// XML forbids or KSeF refuses: 0xC2 (U+0080..U+00BF, the C1 controls), 0xEF (U+F000..U+FFFF,
/// with U+FDD0..U+FDEF, U+FFFE, U+FFFF) and 0xF0.. (the last two code points of each plane).
/// No continuation byte (0x80..=0xBF) is marked, so every other byte is skipped undecoded.
const SUSPECT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b < 0x20 && !matches!(b, 0x09 | 0x0A | 0x0D)) || b == 0x7F || b == 0xC2 || b == 0xEF || b >= 0xF0;
        b += 1;
    }
    t
};

/// Characters XML 1.0 allows at all.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Characters KSeF refuses although XML allows them ("discouraged" in XML 1.0 §2.2).
pub fn is_discouraged(c: char) -> bool {
    let u = c as u32;
    matches!(u, 0x7F..=0x84 | 0x86..=0x9F | 0xFDD0..=0xFDEF) || (u > 0xFFFF && (u & 0xFFFF) >= 0xFFFE)
}

/// The `&str` behind a byte slice the reader handed out: a sub-slice of the (already checked)
/// input, so no second UTF-8 validation; anything else is validated.
fn as_str<'t>(text: &'t str, bytes: &'t [u8]) -> &'t str {
    let base = text.as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    if at >= base && at + bytes.len() <= base + text.len() {
        if let Some(s) = text.get(at - base..at - base + bytes.len()) {
            return s;
        }
    }
    std::str::from_utf8(bytes).unwrap_or("")
}

/// The `&str` of `text` a byte slice handed out by the reader is, when it is one.
fn in_text<'t>(text: &'t str, bytes: &[u8]) -> Option<&'t str> {
    let base = text.as_ptr() as usize;
    let at = bytes.as_ptr() as usize;
    if at >= base && at + bytes.len() <= base + text.len() {
        return text.get(at - base..at - base + bytes.len());
    }
    None
}

fn intern(interned: &mut Vec<Rc<str>>, r: &ResolveResult) -> Result<Rc<str>, String> {
    let bytes: &[u8] = match r {
        ResolveResult::Bound(n) => n.as_ref(),
        ResolveResult::Unbound => b"",
        ResolveResult::Unknown(p) => return Err(format!("undeclared namespace prefix {:?}", String::from_utf8_lossy(p))),
    };
    if let Some(n) = interned.iter().find(|n| n.as_bytes() == bytes) {
        return Ok(n.clone());
    }
    let n: Rc<str> = Rc::from(std::str::from_utf8(bytes).map_err(|e| e.to_string())?);
    interned.push(n.clone());
    Ok(n)
}

fn ns_of(r: &ResolveResult) -> Result<String, String> {
    match r {
        ResolveResult::Bound(n) => Ok(std::str::from_utf8(n.as_ref()).unwrap_or("").to_string()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(p) => Err(format!("undeclared namespace prefix {:?}", String::from_utf8_lossy(p))),
    }
}

const BLOCK: usize = 32;

/// [`SUSPECT`] as arithmetic, so that a whole block is tested in a few vector instructions.
fn is_suspect(b: u8) -> bool {
    (b < 0x20 && b != 0x09 && b != 0x0A && b != 0x0D) | (b == 0x7F) | (b == 0xC2) | (b == 0xEF) | (b >= 0xF0)
}

fn block_has_suspect(block: &[u8; BLOCK]) -> bool {
    block.iter().fold(false, |any, &b| any | is_suspect(b))
}

/// Appends character data to an element's text: borrowed when it is the first chunk and its
/// end-of-line normalisation is a slice of it (no CR, or only a leading CRLF, as in the
/// indentation of a file with Windows line ends), copied otherwise.
fn append_text<'a>(out: &mut Cow<'a, str>, raw: Cow<'a, str>) {
    if out.is_empty() {
        if let Cow::Borrowed(r) = raw {
            let b = r.as_bytes();
            match b.iter().position(|&c| c == b'\r') {
                None => {
                    *out = Cow::Borrowed(r);
                    return;
                }
                // "\r\n..." without another CR normalises to "\n...", which is `r[1..]`.
                Some(0) if b.get(1) == Some(&b'\n') && !b[2..].contains(&b'\r') => {
                    *out = Cow::Borrowed(&r[1..]);
                    return;
                }
                _ => {}
            }
        }
    }
    push_eol_normalized(out.to_mut(), &raw);
}

/// Parses `xml` (already known to be UTF-8, BOM removed by the caller) into a tree.
///
/// The document is read by [`parse_plain`] when it stays within the plain subset that reader
/// handles (nearly every invoice); otherwise, and for every malformed document, by
/// [`parse_events`] on quick-xml's reader, which gives the findings their wording.
pub fn parse<'a>(text: &'a str, lines: &Lines, base: usize) -> Result<Tree<'a>, ParseFailure> {
    let notes = check_chars(text, lines, base)?;
    if let Some(mut tree) = parse_plain(text) {
        tree.notes = notes;
        return Ok(tree);
    }
    parse_events(text, lines, base, notes)
}

/// Characters XML forbids anywhere (a hard stop), and the ones KSeF refuses (notes).
fn check_chars(text: &str, lines: &Lines, base: usize) -> Result<Vec<ParseNote>, ParseFailure> {
    let mut notes = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    // Up to where bytes are looked at one by one: the rest of a block that holds a stop.
    let mut slow_until = 0;
    while i < bytes.len() {
        // Blocks of 32 bytes without a stop (nearly all of them) are skipped whole.
        if i >= slow_until {
            if let Some(block) = bytes.get(i..i + BLOCK) {
                if !block_has_suspect(block.try_into().unwrap_or(&[0; BLOCK])) {
                    i += BLOCK;
                    continue;
                }
                slow_until = i + BLOCK;
            }
        }
        let b = bytes[i];
        // Decided on the byte; only characters that may be refused are decoded.
        if !SUSPECT[b as usize] {
            i += 1;
            continue;
        }
        let c = if b < 0x80 {
            b as char
        } else {
            text[i..].chars().next().unwrap_or('\u{FFFD}')
        };
        if !is_xml_char(c) {
            return Err(ParseFailure {
                code: "xml.char",
                offset: i + base,
                line: lines.line(i + base),
                detail: format!("character U+{:04X} is not allowed in XML", c as u32),
            });
        }
        if is_discouraged(c) && notes.len() < 20 {
            notes.push(ParseNote {
                code: "xml.discouraged_char",
                line: lines.line(i + base),
                detail: format!("U+{:04X}", c as u32),
                node: None,
            });
        }
        i += c.len_utf8();
    }
    Ok(notes)
}

/// Parses with quick-xml's reader, after [`check_chars`]: every document, well-formed or not.
pub(crate) fn parse_events<'a>(text: &'a str, lines: &Lines, base: usize, notes: Vec<ParseNote>) -> Result<Tree<'a>, ParseFailure> {
    let fail = |code, offset: usize, detail: String| ParseFailure {
        code,
        offset: offset + base,
        line: lines.line(offset + base),
        detail,
    };
    let mut tree = Tree {
        // About one element per two '<' (start and end tags); avoids regrowing the arena.
        nodes: Vec::with_capacity(text.len() / 32 + 1),
        notes,
        ..Tree::default()
    };
    let bytes = text.as_bytes();
    let may_have_cdata_end = text.contains("]]>");
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;
    // Namespace scopes, kept as quick-xml's `NsReader` keeps them, except that a scope is opened
    // only for an element that declares a namespace: an element whose attributes do not contain
    // "xmlns" adds no binding and cannot fail, so the bindings (and their order) are the same.
    let mut resolver = NamespaceResolver::default();
    // For each open element, whether it opened a scope; a scope to close before the next event.
    let mut scoped: Vec<bool> = Vec::new();
    let mut pending_pop = false;
    // The default namespace in scope, once resolved; forgotten whenever a scope opens or closes.
    let mut default_ns: Option<Rc<str>> = None;
    let mut stack: Vec<usize> = Vec::new();
    let mut root_closed = false;
    let mut interned: Vec<Rc<str>> = Vec::new();
    // Lines of element starts, counted as the reader moves forward.
    let (mut line_at, mut line) = (0usize, 1u32);
    loop {
        let start = reader.buffer_position() as usize;
        if std::mem::take(&mut pending_pop) {
            resolver.pop();
            default_ns = None;
        }
        // Only start tags are resolved (what `NsReader::read_resolved_event` does for them), not
        // end tags, text or comments.
        let event = match reader.read_event() {
            // Only elements need their namespace; interned, so no allocation per element.
            Ok(e) => match &e {
                Event::Start(s) | Event::Empty(s) => {
                    let declares = s.attributes_raw().windows(5).any(|w| w == b"xmlns");
                    if declares {
                        default_ns = None;
                        // As `NsReader` reports it: a namespace error, at the reader's error position.
                        resolver.push(s).map_err(|err| {
                            fail(
                                "xml.malformed",
                                reader.error_position() as usize,
                                quick_xml::Error::from(err).to_string(),
                            )
                        })?;
                    }
                    match &e {
                        Event::Start(_) => scoped.push(declares),
                        _ => pending_pop = declares,
                    }
                    // An unprefixed name takes the default namespace, which only a scope opened or
                    // closed can change: resolved once per scope, not per element.
                    if s.name().as_ref().contains(&b':') {
                        let (r, _) = resolver.resolve_element(s.name());
                        (Some(intern(&mut interned, &r)), e)
                    } else {
                        let ns = match &default_ns {
                            Some(ns) => Ok(ns.clone()),
                            None => {
                                let (r, _) = resolver.resolve_element(s.name());
                                let ns = intern(&mut interned, &r);
                                default_ns = ns.as_ref().ok().cloned();
                                ns
                            }
                        };
                        (Some(ns), e)
                    }
                }
                Event::End(_) => {
                    pending_pop = scoped.pop().unwrap_or(false);
                    (None, e)
                }
                _ => (None, e),
            },
            Err(e) => return Err(fail("xml.malformed", reader.error_position() as usize, e.to_string())),
        };
        let end = reader.buffer_position() as usize;
        match event {
            (_, Event::DocType(_)) => return Err(fail("xml.doctype", start, String::new())),
            (ns, ev @ (Event::Start(_) | Event::Empty(_))) => {
                let (e, empty) = match &ev {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    _ => unreachable!(),
                };
                if root_closed {
                    return Err(fail("xml.malformed", start, "a second element after the root element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(fail("xml.depth", start, format!("more than {MAX_DEPTH} levels")));
                }
                // The reader hands out names as slices of the input; borrow them from `text`.
                let qname = in_text(text, e.name().into_inner())
                    .ok_or_else(|| fail("xml.malformed", start, "an element name outside the document".into()))?;
                if !valid_name(qname) {
                    return Err(fail("xml.malformed", start, format!("{qname:?} is not a valid element name")));
                }
                let ns = ns
                    .unwrap_or_else(|| Ok(Rc::from("")))
                    .map_err(|m| fail("xml.malformed", start, m))?;
                // Most elements have none: skip setting up the attribute reader for them.
                let has_attributes = !e.attributes_raw().iter().all(|&b| is_ws(b));
                let attrs = if has_attributes {
                    read_attrs(text, e, &resolver).map_err(|m| fail("xml.malformed", start, m))?
                } else {
                    Vec::new()
                };
                line += count_newlines(&bytes[line_at..start]);
                line_at = start;
                let id = tree.open(ns, qname, attrs, stack.last().copied(), (start, end), line);
                if empty {
                    if stack.is_empty() {
                        root_closed = true;
                    }
                } else {
                    stack.push(id);
                }
            }
            (_, Event::End(_)) => {
                let id = stack
                    .pop()
                    .ok_or_else(|| fail("xml.malformed", start, "an end tag without a start tag".into()))?;
                tree.nodes[id].span.1 = end;
                tree.nodes[id].content.1 = start;
                if stack.is_empty() {
                    root_closed = true;
                }
            }
            (_, Event::Text(t)) => {
                let raw: Cow<'a, str> = match t.into_inner() {
                    Cow::Borrowed(b) => Cow::Borrowed(as_str(text, b)),
                    Cow::Owned(b) => Cow::Owned(String::from_utf8(b).unwrap_or_default()),
                };
                let blank = || raw.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                // A document without "]]>" anywhere (the usual case) needs no look per text.
                let has_three = may_have_cdata_end && raw.contains("]]>");
                match stack.last() {
                    // Between child elements only non-blank text matters (it is an error there).
                    Some(&id) if tree.nodes[id].has_children() && blank() => {}
                    Some(&id) => append_text(&mut tree.nodes[id].text, raw),
                    None if raw.trim_matches([' ', '\t', '\n', '\r']).is_empty() => {}
                    None => return Err(fail("xml.malformed", start, "text outside the root element".into())),
                }
                if has_three {
                    return Err(fail("xml.malformed", start, "']]>' in character data".into()));
                }
            }
            (_, Event::GeneralRef(r)) => {
                let name = std::str::from_utf8(&r).unwrap_or("");
                let c = resolve_entity(name).map_err(|m| fail("xml.malformed", start, m))?;
                match stack.last() {
                    Some(&id) => tree.nodes[id].text.to_mut().push(c),
                    None => return Err(fail("xml.malformed", start, "a reference outside the root element".into())),
                }
            }
            (_, Event::CData(c)) => match stack.last() {
                Some(&id) => {
                    let raw: Cow<'a, str> = match c.into_inner() {
                        Cow::Borrowed(b) => Cow::Borrowed(as_str(text, b)),
                        Cow::Owned(b) => Cow::Owned(String::from_utf8(b).unwrap_or_default()),
                    };
                    append_text(&mut tree.nodes[id].text, raw)
                }
                None => return Err(fail("xml.malformed", start, "CDATA outside the root element".into())),
            },
            (_, Event::PI(_)) => tree.notes.push(ParseNote {
                code: "xml.processing_instruction",
                line: lines.line(start + base),
                detail: text[start..end].chars().take(60).collect(),
                node: stack.last().copied(),
            }),
            (_, Event::Decl(d)) => {
                if start != 0 {
                    return Err(fail("xml.malformed", start, "the XML declaration must come first".into()));
                }
                if let Some(Ok(enc)) = d.encoding() {
                    tree.declared_encoding = Some(String::from_utf8_lossy(&enc).into_owned());
                }
            }
            (_, Event::Comment(_)) => {}
            (_, Event::Eof) => {
                if !stack.is_empty() {
                    return Err(fail(
                        "xml.malformed",
                        text.len(),
                        format!("the document ends inside <{}>", tree.nodes[stack[stack.len() - 1]].qname),
                    ));
                }
                if tree.nodes.is_empty() {
                    return Err(fail("xml.malformed", 0, "no root element".into()));
                }
                link_children(&mut tree);
                return Ok(tree);
            }
        }
    }
}

/// XML's white space, as quick-xml counts it (`quick_xml::utils::is_whitespace`).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// An element's attributes, read by quick-xml's attribute reader: names checked, values
/// normalised and unescaped, namespace declarations left out, duplicates refused. The error is
/// the detail of an `xml.malformed` at the element's start.
fn read_attrs(text: &str, e: &BytesStart, resolver: &NamespaceResolver) -> Result<Vec<Attr>, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| err.to_string())?;
        let aq = as_str(text, a.key.into_inner());
        if !valid_name(aq) {
            return Err(format!("{aq:?} is not a valid attribute name"));
        }
        let raw = match &a.value {
            Cow::Borrowed(b) => as_str(text, b),
            Cow::Owned(b) => std::str::from_utf8(b).unwrap_or(""),
        };
        if raw.contains('<') {
            return Err("'<' inside an attribute value".into());
        }
        let value = unescape(raw)?;
        if aq == "xmlns" || aq.starts_with("xmlns:") {
            continue;
        }
        push_resolved(&mut attrs, resolver, a.key, aq, value)?;
    }
    Ok(attrs)
}

/// Resolves an attribute that is not a namespace declaration and adds it to `attrs` (with the
/// type an `xsi:type` value names). The error, the detail of an `xml.malformed`: a prefix
/// without a binding, or a (namespace, local name) pair already there.
fn push_resolved(attrs: &mut Vec<Attr>, resolver: &NamespaceResolver, key: QName, aq: &str, value: Cow<str>) -> Result<(), String> {
    let (rns, local) = resolver.resolve_attribute(key);
    let ans = ns_of(&rns)?;
    let local = String::from_utf8_lossy(local.as_ref()).into_owned();
    if attrs.iter().any(|x: &Attr| x.ns == ans && x.local == local) {
        return Err(format!("attribute {aq} appears twice"));
    }
    let value_qname = (ans == XSI && local == "type")
        .then(|| {
            let (r, l) = resolver.resolve_element(QName(value.trim().as_bytes()));
            ns_of(&r).ok().map(|n| (n, String::from_utf8_lossy(l.as_ref()).into_owned()))
        })
        .flatten();
    attrs.push(Attr {
        ns: ans,
        local,
        qname: aq.to_string(),
        value: value.into_owned(),
        value_qname,
    });
    Ok(())
}

/// Classes of bytes in character data, for the plain reader's text scan.
const TEXT_LF: u8 = 1;
const TEXT_SOLID: u8 = 2;
const TEXT_STOP: u8 = 4;
const TEXT_CR: u8 = 8;
const TEXT_CLASS: [u8; 256] = {
    let mut t = [TEXT_SOLID; 256];
    t[b' ' as usize] = 0;
    t[b'\t' as usize] = 0;
    t[b'\r' as usize] = TEXT_CR;
    t[b'\n' as usize] = TEXT_LF;
    t[b'<' as usize] = TEXT_STOP;
    t[b'&' as usize] = TEXT_STOP;
    t
};

/// The attributes of a tag without namespace declarations, from `text[from..to]` (after the
/// element's name, up to the '>' or "/>"): in the plain subset `name="value"` or `name='value'`,
/// each after white space, with white space allowed around '=', which quick-xml's attribute
/// reader reads as the same pairs. Anything else (a missing '=' or quote, a name of other
/// characters, two attributes without space between them, a repeated name) and every check of
/// [`read_attrs`] that fails give up with `None`, for [`parse_events`] to report.
fn plain_attrs(text: &str, from: usize, to: usize, resolver: &NamespaceResolver) -> Option<Vec<Attr>> {
    let b = &text.as_bytes()[..to];
    let skip_ws = |mut j: usize| {
        while b.get(j).is_some_and(|&c| is_ws(c)) {
            j += 1;
        }
        j
    };
    let mut attrs: Vec<Attr> = Vec::new();
    let mut j = from;
    loop {
        let key_at = skip_ws(j);
        if key_at == to {
            return Some(attrs);
        }
        if key_at == j {
            return None;
        }
        let mut key_end = key_at;
        while b.get(key_end).is_some_and(|&c| NAME_ASCII[c as usize] || c == b':') {
            key_end += 1;
        }
        let eq = skip_ws(key_end);
        if b.get(eq) != Some(&b'=') {
            return None;
        }
        let q_at = skip_ws(eq + 1);
        let quote = *b.get(q_at).filter(|&&c| c == b'"' || c == b'\'')?;
        let v_end = q_at + 1 + b[q_at + 1..].iter().position(|&c| c == quote)?;
        j = v_end + 1;
        let aq = &text[key_at..key_end];
        let raw = &text[q_at + 1..v_end];
        // What `read_attrs` checks, in its order; quick-xml's own check of a repeated name first.
        if attrs.iter().any(|a| a.qname == aq) || !valid_name(aq) || raw.contains('<') {
            return None;
        }
        let value = unescape(raw).ok()?;
        if aq == "xmlns" || aq.starts_with("xmlns:") {
            // A declaration: the caller gave up on those before.
            return None;
        }
        push_resolved(&mut attrs, resolver, QName(aq.as_bytes()), aq, value).ok()?;
    }
}

/// The '>' that ends the tag whose bytes after '<' start at `from`, as quick-xml's
/// `ElementParser` finds it: the first one outside quotes, where a quote (' or ") opens a region
/// that only the same quote closes.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (j, &c) in b.iter().enumerate().skip(from) {
        if quote == 0 {
            match c {
                b'>' => return Some(j),
                b'"' | b'\'' => quote = c,
                _ => {}
            }
        } else if c == quote {
            quote = 0;
        }
    }
    None
}

/// The parse of a plain document without quick-xml's event loop: an optional XML declaration
/// at the very start, then elements, attributes, character data and the five predefined and
/// character references, nothing else. Tags end where quick-xml's `ElementParser` would end
/// them ([`tag_end`]), the declaration is read by its [`PiParser`], a tag that declares a
/// namespace has its attributes read by quick-xml's attribute reader ([`read_attrs`]) and any
/// other by [`plain_attrs`], names are resolved by its [`NamespaceResolver`], and every check of
/// [`parse_events`] is made; the
/// first thing outside that subset or wrong in any way (a comment, CDATA, a processing
/// instruction, a DOCTYPE, a BOM, "]]>" anywhere, a bad name, reference or attribute, a
/// mismatched or missing end tag, text outside the root, ...) gives up with `None`, and
/// [`parse_events`] reads the document again and reports it in its words. So where this returns
/// a tree it is the tree [`parse_events`] builds (a test compares the two on the samples and on
/// thousands of mutants), at a fraction of the cost: no event per indentation run, no name
/// stack kept beside the tree's.
pub(crate) fn parse_plain(text: &str) -> Option<Tree<'_>> {
    let b = text.as_bytes();
    if b.starts_with(b"\xEF\xBB\xBF") || text.contains("]]>") {
        return None;
    }
    let mut tree = Tree {
        nodes: Vec::with_capacity(text.len() / 32 + 1),
        ..Tree::default()
    };
    let mut i = 0;
    if b.starts_with(b"<?") {
        // As quick-xml reads it: from the '?' to the first "?>", at least "<??>".
        let rel = PiParser(false).feed(&b[1..])?;
        if rel < 2 {
            return None;
        }
        let gt = 1 + rel;
        let content = &text[2..gt - 1];
        let cb = content.as_bytes();
        if !(cb.starts_with(b"xml") && (cb.len() == 3 || is_ws(cb[3]))) {
            return None;
        }
        let decl = BytesDecl::from_start(BytesStart::from_content(content, 3));
        if let Some(Ok(enc)) = decl.encoding() {
            tree.declared_encoding = Some(String::from_utf8_lossy(&enc).into_owned());
        }
        i = gt + 1;
    }
    let mut resolver = NamespaceResolver::default();
    // For each open element, whether it opened a namespace scope.
    let mut scoped: Vec<bool> = Vec::new();
    let mut default_ns: Option<Rc<str>> = None;
    let mut interned: Vec<Rc<str>> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut root_closed = false;
    // The line of the byte at `i`: the line feeds of every byte passed are counted on the way.
    let mut line = 1 + count_newlines(&b[..i]);
    loop {
        // Character data up to the next markup or reference.
        // One table look-up a byte (chunks are short: indentation and values), counting line
        // feeds and noting any byte that is not white space.
        let mut k = i;
        let mut seen = 0u8;
        while let Some(&c) = b.get(k) {
            let class = TEXT_CLASS[c as usize];
            if class == TEXT_STOP {
                break;
            }
            line += u32::from(class & TEXT_LF);
            seen |= class;
            k += 1;
        }
        if k > i {
            let raw = &text[i..k];
            let blank = seen & TEXT_SOLID == 0;
            match stack.last() {
                Some(&id) => {
                    let node = &mut tree.nodes[id];
                    if !(node.has_children() && blank) {
                        if seen & TEXT_CR == 0 && node.text.is_empty() {
                            // What `append_text` does with a first chunk without a CR, without
                            // looking for one again.
                            node.text = Cow::Borrowed(raw);
                        } else {
                            append_text(&mut node.text, Cow::Borrowed(raw));
                        }
                    }
                }
                None if blank => {}
                None => return None,
            }
        }
        let Some(&c) = b.get(k) else { break };
        if c == b'&' {
            // As quick-xml reads a reference: up to the first ';', '&' or '<'.
            let rel = b[k + 1..].iter().position(|&c| matches!(c, b';' | b'&' | b'<'))?;
            if b[k + 1 + rel] != b';' {
                return None;
            }
            let c = resolve_entity(&text[k + 1..k + 1 + rel]).ok()?;
            let &id = stack.last()?;
            tree.nodes[id].text.to_mut().push(c);
            // A valid reference holds no line feed.
            i = k + 2 + rel;
            continue;
        }
        match *b.get(k + 1)? {
            b'/' => {
                let id = stack.pop()?;
                let qname = tree.nodes[id].qname.as_bytes();
                let at = k + 2 + qname.len();
                // `</name>` exactly, as nearly always; otherwise delimited as quick-xml does, the
                // name trimmed at its end and compared.
                let gt = if b.get(k + 2..at) == Some(qname) && b.get(at) == Some(&b'>') {
                    at
                } else {
                    let gt = tag_end(b, k + 1)?;
                    let mut name = &b[k + 2..gt];
                    while let [rest @ .., last] = name {
                        if !is_ws(*last) {
                            break;
                        }
                        name = rest;
                    }
                    if name != qname {
                        return None;
                    }
                    line += count_newlines(&b[k..gt]);
                    gt
                };
                if scoped.pop()? {
                    resolver.pop();
                    default_ns = None;
                }
                tree.nodes[id].span.1 = gt + 1;
                tree.nodes[id].content.1 = k;
                if stack.is_empty() {
                    root_closed = true;
                }
                i = gt + 1;
            }
            b'!' | b'?' => return None,
            _ => {
                if root_closed || stack.len() >= MAX_DEPTH {
                    return None;
                }
                // The name, as quick-xml reads it: up to the first white space, '/' or '>' here
                // (any other byte after name characters gives up).
                let n0 = k + 1;
                let mut name_end = n0;
                let mut colon = false;
                while let Some(&c) = b.get(name_end) {
                    if NAME_ASCII[c as usize] {
                        name_end += 1;
                    } else if c == b':' {
                        colon = true;
                        name_end += 1;
                    } else {
                        break;
                    }
                }
                let qname = &text[n0..name_end];
                // Names without ':' are checked by the loop above but for their first character.
                let valid = if colon {
                    valid_name(qname)
                } else {
                    qname.as_bytes().first().is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_')
                };
                if !valid {
                    return None;
                }
                // The line of the '<' (the name holds no line feed; the attributes may).
                let node_line = line;
                let (gt, empty, has_attributes) = match *b.get(name_end)? {
                    b'>' => (name_end, false, false),
                    b'/' if b.get(name_end + 1) == Some(&b'>') => (name_end + 1, true, false),
                    c if is_ws(c) => {
                        let gt = tag_end(b, name_end)?;
                        let empty = b[gt - 1] == b'/';
                        let attrs_end = if empty { gt - 1 } else { gt };
                        line += count_newlines(&b[name_end..gt]);
                        (gt, empty, !b[name_end..attrs_end].iter().all(|&c| is_ws(c)))
                    }
                    _ => return None,
                };
                // Start and end of a `<name .../>` with its '/': what quick-xml's `emit_start` strips.
                let content = &text[n0..if empty { gt - 1 } else { gt }];
                let name_len = name_end - n0;
                let declares = has_attributes && content.as_bytes()[name_len..].windows(5).any(|w| w == b"xmlns");
                let start = declares.then(|| BytesStart::from_content(content, name_len));
                if let Some(s) = &start {
                    default_ns = None;
                    resolver.push(s).ok()?;
                }
                let ns = if colon {
                    let (r, _) = resolver.resolve_element(QName(qname.as_bytes()));
                    intern(&mut interned, &r).ok()?
                } else {
                    match &default_ns {
                        Some(ns) => ns.clone(),
                        None => {
                            let (r, _) = resolver.resolve_element(QName(qname.as_bytes()));
                            let ns = intern(&mut interned, &r).ok()?;
                            default_ns = Some(ns.clone());
                            ns
                        }
                    }
                };
                let attrs = match &start {
                    Some(s) => read_attrs(text, s, &resolver).ok()?,
                    None if has_attributes => plain_attrs(text, name_end, n0 + content.len(), &resolver)?,
                    None => Vec::new(),
                };
                let id = tree.open(ns, qname, attrs, stack.last().copied(), (k, gt + 1), node_line);
                if empty {
                    if declares {
                        resolver.pop();
                        default_ns = None;
                    }
                    if stack.is_empty() {
                        root_closed = true;
                    }
                } else {
                    stack.push(id);
                    scoped.push(declares);
                }
                i = gt + 1;
            }
        }
    }
    if !stack.is_empty() || tree.nodes.is_empty() {
        return None;
    }
    link_children(&mut tree);
    Some(tree)
}

/// Fills the shared child list: nodes are in document order, so walking them in order appends
/// every element's children in order, each parent's block sized by its count.
fn link_children(tree: &mut Tree) {
    let mut at = 0u32;
    for n in tree.nodes.iter_mut() {
        n.children_at = at;
        at += n.children_len;
        // Counted up again below, as each child is put in place.
        n.children_len = 0;
    }
    let mut list = vec![0usize; at as usize];
    for id in 1..tree.nodes.len() {
        if let Some(p) = tree.nodes[id].parent {
            let parent = &mut tree.nodes[p];
            list[(parent.children_at + parent.children_len) as usize] = id;
            parent.children_len += 1;
        }
    }
    tree.child_list = list;
}

/// ASCII letters, digits, '_', '-' and '.': the bytes of an unprefixed ASCII name after its first.
const NAME_ASCII: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        c += 1;
    }
    t
};

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    // Nearly every name: unprefixed ASCII, decided by a table.
    if !b.is_empty() && (b[0].is_ascii_alphabetic() || b[0] == b'_') && b[1..].iter().all(|&c| NAME_ASCII[c as usize]) {
        return true;
    }
    // The common case in one pass: ASCII letters, digits, '_', '-', '.', and at most one ':'
    // that is neither first nor last and is followed by a name-start character.
    if n.is_ascii() && !b.is_empty() && (b[0].is_ascii_alphabetic() || b[0] == b'_') {
        let mut colon = false;
        let mut after_colon = false;
        let mut ok = true;
        for &c in &b[1..] {
            if c == b':' {
                ok &= !colon;
                colon = true;
                after_colon = true;
                continue;
            }
            if after_colon {
                ok &= c.is_ascii_alphabetic() || c == b'_';
                after_colon = false;
            } else {
                ok &= c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
            }
        }
        return ok && !after_colon;
    }
    let mut chars = n.chars();
    let Some(first) = chars.next() else { return false };
    let start = |c: char| c.is_alphabetic() || c == '_' || c == ':';
    start(first)
        && chars.all(|c| start(c) || c.is_alphanumeric() || matches!(c, '-' | '.' | '\u{B7}'))
        && !n.starts_with(':')
        && n.matches(':').count() <= 1
        && !n.ends_with(':')
}

fn resolve_entity(name: &str) -> Result<char, String> {
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
            } else if let Some(dec) = name.strip_prefix('#') {
                (!dec.is_empty() && dec.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| dec.parse().ok())
                    .flatten()
            } else {
                return Err(format!("undeclared entity &{name};"));
            };
            let c = code
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad character reference &{name};"))?;
            if !is_xml_char(c) {
                return Err(format!("character reference &{name}; names a character XML forbids"));
            }
            c
        }
    };
    Ok(c)
}

/// Attribute-value normalisation (literal tab/CR/LF become spaces) and reference expansion.
fn unescape(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw.contains(['&', '\t', '\n', '\r']) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'&' {
            let end = rest[i..].find(';').ok_or("'&' without ';' in an attribute value")?;
            out.push(resolve_entity(&rest[i + 1..i + end])?);
            rest = &rest[i + end + 1..];
        } else {
            // A literal CRLF is one line end (XML §2.11), hence one space.
            out.push(' ');
            let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[i + skip..];
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Appends character data with XML's end-of-line handling: CRLF and a lone CR become LF
/// (a CR written as `&#13;` arrives through a reference and is kept).
fn push_eol_normalized(out: &mut String, raw: &str) {
    let mut parts = raw.split('\r');
    out.push_str(parts.next().unwrap_or(""));
    for part in parts {
        out.push('\n');
        out.push_str(part.strip_prefix('\n').unwrap_or(part));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Tree<'_>, ParseFailure> {
        parse(s, &Lines::new(s.as_bytes()), 0)
    }

    #[test]
    fn spans_lines_and_text() {
        let t = p("<a>\n <b x=\"1&amp;2\">t&lt;<![CDATA[x]]></b>\n<c/></a>").unwrap();
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[1].text, "t<x");
        assert_eq!(t.nodes[1].attrs[0].value, "1&2");
        assert_eq!(t.nodes[1].line, 2);
        let crlf = p("<a x=\"1\r\n2\">l1\r\nl2\rl3&#13;</a>").unwrap();
        assert_eq!(crlf.nodes[0].text, "l1\nl2\nl3\r");
        // A leading CRLF alone is borrowed without its CR; anything else is normalised as usual.
        for (raw, text) in [
            ("\r\n  ", "\n  "),
            ("\r\n\r\n", "\n\n"),
            ("\r\r\n", "\n\n"),
            ("\r", "\n"),
            ("x\r\n", "x\n"),
            ("\r\nx\ry", "\nx\ny"),
        ] {
            let doc = format!("<a>{raw}</a>");
            let t = p(&doc).unwrap();
            assert_eq!(t.nodes[0].text, text, "{raw:?}");
            assert_eq!(matches!(t.nodes[0].text, Cow::Borrowed(_)), raw == "\r\n  ", "{raw:?}");
        }
        assert_eq!(crlf.nodes[0].attrs[0].value, "1 2");
        assert_eq!(t.nodes[2].line, 3);
        assert_eq!(
            &"<a>\n <b x=\"1&amp;2\">t&lt;<![CDATA[x]]></b>\n<c/></a>"[t.nodes[2].span.0..t.nodes[2].span.1],
            "<c/>"
        );
    }

    /// `parse_plain` against `parse_events` on one document: where the plain reader returns a
    /// tree it must be the very tree of the event reader (names, namespaces, attributes, text,
    /// spans, lines, children), and it must give up on every document the event reader refuses.
    /// Returns whether the plain reader took the document.
    fn plain_agrees(doc: &str) -> bool {
        let lines = Lines::new(doc.as_bytes());
        let Ok(notes) = check_chars(doc, &lines, 0) else {
            return false;
        };
        let plain = parse_plain(doc).map(|mut t| {
            t.notes = notes.clone();
            t
        });
        match (plain, parse_events(doc, &lines, 0, notes)) {
            (Some(p), Ok(t)) => {
                assert_eq!(p, t, "{doc:?}");
                for (a, b) in p.nodes.iter().zip(&t.nodes) {
                    assert_eq!(
                        (a.ns.as_ref(), a.children_at, a.children_len),
                        (b.ns.as_ref(), b.children_at, b.children_len)
                    );
                }
                true
            }
            (Some(_), Err(e)) => panic!("the plain reader took a document the event reader refuses ({e:?}): {doc:?}"),
            (None, _) => false,
        }
    }

    fn sources() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("cirfmf-templates")).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let t = std::fs::read_to_string(p).unwrap();
                t.strip_prefix('\u{FEFF}').map(str::to_string).unwrap_or(t)
            })
            .collect()
    }

    #[test]
    fn the_plain_reader_builds_the_event_readers_tree_on_every_sample() {
        for src in sources() {
            let lf = src.replace("\r\n", "\n");
            for doc in [src.clone(), lf.clone(), lf.replace('\n', "\r\n"), lf.replace('\n', "\r")] {
                assert!(plain_agrees(&doc), "a sample not taken by the plain reader");
            }
        }
    }

    #[test]
    fn the_plain_reader_agrees_or_gives_up_on_edge_cases() {
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        let taken = [
            "<a/>",
            "<a>&amp;&#x41;&#65;&lt;&gt;&quot;&apos;</a>",
            "<?xml version='1.0' encoding='x'?><a/>",
            "<?xml?><a/>",
            "<?xml\tencoding=\"UTF-8\"?>\n<a/>\n",
            "<a></a >",
            "<a></a\t\r\n>",
            "<a x='>'/>",
            "<a x=\">\" />",
            "<a><b/></a>  ",
            "<a xmlns='u'><b/></a>",
            "<p:a xmlns:p='u'><p:b/><c/></p:a>",
            "<a><b xmlns='u'/><c/></a>",
            "<a><b xmlns='u'></b><c/></a>",
            "<a xsi:type='p:t' xmlns:p='v' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'/>",
            "<a x='1&amp;2\r\n3\t4'/>",
            "<a\n/>",
            "<a\r\n b='1'\r\n/>",
            "<a>\r\n</a>",
            "<a>x\ry\r\n</a>",
            "<a>\r\n<b>1</b>\r\n x</a>",
            "<a>x&amp;\r\ny</a>",
            "<a>></a>",
            "<a x='1' p:x='1' xmlns:p='u'/>",
            "<a b = '1' c=\"2\"\t d\n=\n'3'/>",
            "<a b=''></a>",
            "<a b='x>y' c=\"'\"/>",
            "<a b='&lt;&#x41;\r\n'/>",
            "<r xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'><a xsi:type=' p:t '/><b xsi:type='xsi:x'/></r>",
            "<r xmlns:p='u'><a p:b='1' b='2'/></r>",
            "<r><a b='xmlns'/></r>",
        ];
        for doc in taken {
            assert!(plain_agrees(doc), "{doc:?} not taken");
        }
        assert!(plain_agrees(&deep(MAX_DEPTH)));
        let refused = [
            "<a xmlns:xml='x'/>",
            "<a x='1' x='1'/>",
            "<a p:x='1' q:x='1' xmlns:p='u' xmlns:q='u'/>",
            "<a x='&#1;'/>",
            "<a x='&bad;'/>",
            "<a x='<'/>",
            "<a x='&amp'/>",
            "<a>&#xD800;</a>",
            "<a>&;</a>",
            "<a>& </a>",
            "<a>&amp</a>",
            "<a>&amp<b/></a>",
            "<a/>&amp;",
            "<a/ >",
            "<a / >",
            "<a/x>",
            "<a:b:c/>",
            "<p:a/>",
            "<1a/>",
            "< a/>",
            "<>",
            "<a>",
            "<a><",
            "<a>text",
            "",
            "   ",
            "<a/>x",
            "<a/><b/>",
            "</a>",
            "<a></b>",
            "<a>]]></a>",
            "<a><![CDATA[x]]></a>",
            "\u{FEFF}<a/>",
            "<a b=1/>",
            "<a b/>",
            "<a b=\"1'/>",
            "<??><a/>",
            "<?><a/>",
            "<?xm?><a/>",
            "<?xml-stylesheet?><a/>",
            " <?xml version='1.0'?><a/>",
            "<a/><?xml version='1.0'?>",
            "<a><?pi?></a>",
            "<a><!-- c --></a>",
            "<!DOCTYPE a><a/>",
            "<a></a x='1'>",
            "<a b='1' b='2'/>",
            // quick-xml's attribute reader takes it (and so does `parse_events`), the plain one not.
            "<a b='1'c='2'/>",
            "<a b='1' xsi:type='x'/>",
            "<r xmlns:p='u' xmlns:q='u'><a p:b='1' q:b='2'/></r>",
            "<a b='1'/c/>",
            "<a b='1' c/>",
            "<a b=/>",
            "<a b='1/>",
            "<a =''/>",
            "<a b:='1'/>",
            "<a b='<'/>",
            "<a b='&x;'/>",
        ];
        let wrongly: Vec<_> = refused.iter().filter(|d| plain_agrees(d)).collect();
        assert!(wrongly.is_empty(), "taken: {wrongly:?}");
        assert!(!plain_agrees(&deep(MAX_DEPTH + 1)));
    }

    /// Byte- and markup-level mutants of the samples: every one either read by the plain reader
    /// into the event reader's tree, or left to the event reader. `RELAY_FA3_PLAIN_MUTANTS`
    /// (default 600 per source) and `RELAY_FA3_SEED` widen it.
    #[test]
    fn the_plain_reader_agrees_with_the_event_reader_on_mutants() {
        const JUNK: &[&str] = &[
            "<",
            ">",
            "&",
            ";",
            "\"",
            "'",
            "/",
            "=",
            "!",
            "?",
            "-",
            "[",
            "]",
            " ",
            "\r",
            "\n",
            "\r\n",
            "\t",
            ":",
            "x",
            "&amp;",
            "&#1;",
            "&#xA0;",
            "&foo;",
            "&#x;",
            "<!-- c -->",
            "<?pi x?>",
            "<![CDATA[x]]>",
            "]]>",
            "<x:a/>",
            "<a xmlns:x='u'/>",
            "xmlns=\"\"",
            " xmlns:etd=\"http://x\"",
            " xmlns=\"http://y\"",
            " a=\"1\"",
            " a='1' a='2'",
            " xsi:type=\"etd:TKodKraju\"",
            "<a>",
            "</a>",
            "<a/>",
            "</",
            "/>",
            "<?xml version='1.0'?>",
            "<!DOCTYPE a>",
            "\u{a0}",
            "ó",
            "\u{FEFF}",
        ];
        let per_source: usize = std::env::var("RELAY_FA3_PLAIN_MUTANTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600);
        let mut seed: u64 = std::env::var("RELAY_FA3_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(11) | 1;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        let (mut taken, mut total) = (0, 0);
        for src in sources() {
            for _ in 0..per_source {
                let mut t = src.clone();
                for _ in 0..1 + next(3) {
                    let mut at = next(t.len() + 1);
                    while !t.is_char_boundary(at) {
                        at -= 1;
                    }
                    match next(6) {
                        0 | 1 => t.insert_str(at, JUNK[next(JUNK.len())]),
                        2 => {
                            let mut to = (at + 1 + next(4)).min(t.len());
                            while !t.is_char_boundary(to) {
                                to += 1;
                            }
                            t.replace_range(at..to, "");
                        }
                        3 => {
                            let mut to = (at + 1 + next(40)).min(t.len());
                            while !t.is_char_boundary(to) {
                                to += 1;
                            }
                            let piece = t[at..to].to_string();
                            t.insert_str(to, &piece);
                        }
                        4 => t.truncate(at),
                        _ => {
                            // A tag's name changed: a mismatched end tag or an unknown element.
                            if let Some(lt) = t[at..].find('<') {
                                t.insert(at + lt + 1, ['Q', 'p', ':', '_'][next(4)]);
                            }
                        }
                    }
                }
                total += 1;
                taken += usize::from(plain_agrees(&t));
            }
        }
        // Both kinds are exercised: mutants the plain reader takes, and mutants it leaves.
        assert!(taken > total / 20 && taken < total, "{taken} of {total} taken");
    }

    /// Every character XML forbids or KSeF refuses starts with a byte the scan stops at.
    #[test]
    fn the_suspect_bytes_cover_every_refused_character() {
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if !is_xml_char(c) || is_discouraged(c) {
                let first = c.encode_utf8(&mut buf).as_bytes()[0];
                assert!(SUSPECT[first as usize], "U+{:04X}", c as u32);
            }
        }
        assert!((0x80..=0xBF).all(|b| !SUSPECT[b]), "continuation bytes are never stops");
    }

    #[test]
    fn the_block_test_matches_the_byte_table() {
        for b in 0..=255u8 {
            assert_eq!(is_suspect(b), SUSPECT[b as usize], "{b:#x}");
            // In every position of a block of otherwise plain bytes.
            for at in [0, 13, BLOCK - 1] {
                let mut block = [b'a'; BLOCK];
                block[at] = b;
                assert_eq!(block_has_suspect(&block), SUSPECT[b as usize], "{b:#x} at {at}");
            }
        }
        // A refused character in the middle of a long run is still found.
        let doc = format!("<a>{}\u{1}{}</a>", "x".repeat(100), "y".repeat(100));
        assert_eq!(p(&doc).unwrap_err().code, "xml.char");
    }

    #[test]
    fn what_xml_forbids_is_refused() {
        assert_eq!(p("<a>\u{1}</a>").unwrap_err().code, "xml.char");
        assert_eq!(p("<a>\u{FFFE}</a>").unwrap_err().code, "xml.char");
        for bad in [
            "<a>&#1;</a>",
            "<a>&foo;</a>",
            "<a></a><b/>",
            "<a></a>text",
            "<a><b></a>",
            "<a x='1' x='2'/>",
            "<a x='<'/>",
            "<p:a/>",
            "<a>]]></a>",
            "<a>",
            "",
        ] {
            assert_eq!(p(bad).unwrap_err().code, "xml.malformed", "{bad:?}");
        }
        assert_eq!(
            p("<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><a>&e;</a>")
                .unwrap_err()
                .code,
            "xml.doctype"
        );
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1));
        assert_eq!(p(&deep).unwrap_err().code, "xml.depth");
    }
}
