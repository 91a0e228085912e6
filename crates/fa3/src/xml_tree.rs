//! A hostile-input-safe parse of an invoice into a small element tree, with byte spans and
//! line numbers for every element.
//!
//! Refused before anything else: a DOCTYPE (and with it every entity declaration, so no XXE and
//! no entity bomb), input that is not UTF-8, and nesting deeper than [`MAX_DEPTH`]. Checks
//! quick-xml leaves to its caller are done here: characters XML 1.0 forbids, character
//! references to them, undeclared entities, text or a second element outside the root.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// Deeper than any valid FA(3) document (which nests about ten levels).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub struct Attr {
    pub ns: String,
    pub local: String,
    /// As written, with its prefix.
    pub qname: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub ns: String,
    pub local: String,
    pub qname: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<usize>,
    pub parent: Option<usize>,
    /// The element's own character data (entities resolved), all chunks concatenated.
    pub text: String,
    /// Byte span of the whole element, `<` of the start tag to `>` of the end tag.
    pub span: (usize, usize),
    /// Byte span of the content between the tags (empty for `<a/>`).
    pub content: (usize, usize),
    pub line: u32,
}

impl Node {
    /// Whether there is character data other than whitespace directly in this element.
    pub fn has_text(&self) -> bool {
        !self.text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
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

#[derive(Debug, Default)]
pub struct Tree {
    /// `nodes[0]` is the root element.
    pub nodes: Vec<Node>,
    pub notes: Vec<ParseNote>,
    /// The encoding named in the XML declaration, if any.
    pub declared_encoding: Option<String>,
}

/// Byte offset → 1-based line.
pub struct Lines(Vec<usize>);

impl Lines {
    pub fn new(bytes: &[u8]) -> Lines {
        let mut starts = vec![0];
        starts.extend(bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1));
        Lines(starts)
    }

    pub fn line(&self, offset: usize) -> u32 {
        match self.0.binary_search(&offset) {
            Ok(i) => i as u32 + 1,
            Err(i) => i as u32,
        }
    }
}

/// Characters XML 1.0 allows at all.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Characters KSeF refuses although XML allows them ("discouraged" in XML 1.0 §2.2).
pub fn is_discouraged(c: char) -> bool {
    let u = c as u32;
    matches!(u, 0x7F..=0x84 | 0x86..=0x9F | 0xFDD0..=0xFDEF) || (u > 0xFFFF && (u & 0xFFFF) >= 0xFFFE)
}

fn ns_of(r: &ResolveResult) -> Result<String, String> {
    match r {
        ResolveResult::Bound(n) => Ok(String::from_utf8_lossy(n.as_ref()).into_owned()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(p) => Err(format!("undeclared namespace prefix {:?}", String::from_utf8_lossy(p))),
    }
}

/// Parses `xml` (already known to be UTF-8, BOM removed by the caller) into a tree.
pub fn parse(text: &str, lines: &Lines, base: usize) -> Result<Tree, ParseFailure> {
    let fail = |code, offset: usize, detail: String| ParseFailure {
        code,
        offset: offset + base,
        line: lines.line(offset + base),
        detail,
    };
    // Characters XML forbids anywhere, and the ones KSeF refuses.
    let mut tree = Tree::default();
    for (i, c) in text.char_indices() {
        if !is_xml_char(c) {
            return Err(fail("xml.char", i, format!("character U+{:04X} is not allowed in XML", c as u32)));
        }
        if is_discouraged(c) && tree.notes.len() < 20 {
            tree.notes.push(ParseNote {
                code: "xml.discouraged_char",
                line: lines.line(i + base),
                detail: format!("U+{:04X}", c as u32),
                node: None,
            });
        }
    }
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut stack: Vec<usize> = Vec::new();
    let mut root_closed = false;
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_resolved_event() {
            Ok((r, e)) => (ns_of(&r), e),
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
                let qname = std::str::from_utf8(e.name().as_ref()).unwrap_or("").to_string();
                if !valid_name(&qname) {
                    return Err(fail("xml.malformed", start, format!("{qname:?} is not a valid element name")));
                }
                let ns = ns.map_err(|m| fail("xml.malformed", start, m))?;
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|err| fail("xml.malformed", start, err.to_string()))?;
                    let aq = std::str::from_utf8(a.key.as_ref()).unwrap_or("").to_string();
                    if !valid_name(&aq) {
                        return Err(fail("xml.malformed", start, format!("{aq:?} is not a valid attribute name")));
                    }
                    let raw = std::str::from_utf8(&a.value).unwrap_or("");
                    if raw.contains('<') {
                        return Err(fail("xml.malformed", start, "'<' inside an attribute value".into()));
                    }
                    let value = unescape(raw).map_err(|m| fail("xml.malformed", start, m))?;
                    if aq == "xmlns" || aq.starts_with("xmlns:") {
                        continue;
                    }
                    let (rns, local) = reader.resolve_attribute(a.key);
                    let ans = ns_of(&rns).map_err(|m| fail("xml.malformed", start, m))?;
                    let local = String::from_utf8_lossy(local.as_ref()).into_owned();
                    if attrs.iter().any(|x: &Attr| x.ns == ans && x.local == local) {
                        return Err(fail("xml.malformed", start, format!("attribute {aq} appears twice")));
                    }
                    attrs.push(Attr {
                        ns: ans,
                        local,
                        qname: aq,
                        value,
                    });
                }
                let id = tree.nodes.len();
                tree.nodes.push(Node {
                    ns,
                    local: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    qname,
                    attrs,
                    children: Vec::new(),
                    parent: stack.last().copied(),
                    text: String::new(),
                    span: (start, end),
                    content: (end, end),
                    line: lines.line(start + base),
                });
                if let Some(&p) = stack.last() {
                    tree.nodes[p].children.push(id);
                }
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
                let raw = std::str::from_utf8(&t).unwrap_or("");
                match stack.last() {
                    Some(&id) => tree.nodes[id].text.push_str(raw),
                    None if raw.trim_matches([' ', '\t', '\n', '\r']).is_empty() => {}
                    None => return Err(fail("xml.malformed", start, "text outside the root element".into())),
                }
                if raw.contains("]]>") {
                    return Err(fail("xml.malformed", start, "']]>' in character data".into()));
                }
            }
            (_, Event::GeneralRef(r)) => {
                let name = std::str::from_utf8(&r).unwrap_or("");
                let c = resolve_entity(name).map_err(|m| fail("xml.malformed", start, m))?;
                match stack.last() {
                    Some(&id) => tree.nodes[id].text.push(c),
                    None => return Err(fail("xml.malformed", start, "a reference outside the root element".into())),
                }
            }
            (_, Event::CData(c)) => match stack.last() {
                Some(&id) => tree.nodes[id].text.push_str(std::str::from_utf8(&c).unwrap_or("")),
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
                return Ok(tree);
            }
        }
    }
}

fn valid_name(n: &str) -> bool {
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
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'&' {
            let end = rest[i..].find(';').ok_or("'&' without ';' in an attribute value")?;
            out.push(resolve_entity(&rest[i + 1..i + end])?);
            rest = &rest[i + end + 1..];
        } else {
            out.push(' ');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Tree, ParseFailure> {
        parse(s, &Lines::new(s.as_bytes()), 0)
    }

    #[test]
    fn spans_lines_and_text() {
        let t = p("<a>\n <b x=\"1&amp;2\">t&lt;<![CDATA[x]]></b>\n<c/></a>").unwrap();
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[1].text, "t<x");
        assert_eq!(t.nodes[1].attrs[0].value, "1&2");
        assert_eq!(t.nodes[1].line, 2);
        assert_eq!(t.nodes[2].line, 3);
        assert_eq!(
            &"<a>\n <b x=\"1&amp;2\">t&lt;<![CDATA[x]]></b>\n<c/></a>"[t.nodes[2].span.0..t.nodes[2].span.1],
            "<c/>"
        );
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
