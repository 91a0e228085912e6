//! A deterministic generator of mutated invoices: elements deleted, duplicated, reordered,
//! renamed, moved into the wrong namespace; values broken or padded; attributes removed, added
//! or changed; stray text and elements inserted. Mutations are text splices on the element
//! spans the validator's own parser reports, so everything else stays byte for byte.

use relay_fa3::xml_tree::{parse, Lines, Tree};
use relay_fa3::xsd_schema::{self, Content, ElemId, QName, TypeRef};

/// splitmix64: tiny, deterministic, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Values that break (or, padded, sometimes keep) the common FA(3) types.
const BAD_VALUES: &[&str] = &[
    "",
    " ",
    "x",
    "2026-13-01",
    "2026-02-30",
    "2026-02-15T10:00:00",
    "2026-02-15Z",
    "1899-12-31",
    "2051-01-01",
    "1.234",
    "-0.5",
    "0.5",
    "01.50",
    "1e3",
    "12345678901234567.1",
    "99999999999999999",
    "ABC",
    "pl",
    "PL",
    "XX",
    "EUR",
    "0",
    "-1",
    "128",
    "3",
    "23",
    "np",
    "zw",
    "0 KR",
    "GTU_14",
    "GTU_01",
    "\u{663}",
    "1234567890",
    "5265877635",
    "0123456789",
    "9999999999-20230908-8BEF280C8D35-4D",
    "a@b",
    "ab",
    "1 000",
    "&amp;",
    "&#x41;",
    "<![CDATA[2026-01-01]]>",
    // Subtle ones: signs, leading zeros, whitespace, timezones, fractions, digit counts.
    "+1",
    "01",
    "-0",
    " 1 ",
    "1.0",
    "1.",
    ".5",
    "100.00",
    "100.001",
    "0100",
    "99.999",
    "12345678901234",
    "123456789012345",
    "1234567890123456.12",
    "-1234567890123456.12",
    "0.000001",
    "0.0000001",
    "2026-02-15+01:00",
    "2026-02-01T00:00:00.5Z",
    "2026-02-01T24:00:00Z",
    "2026-02-01T23:59:60Z",
    "2026-02-01T10:00:00+14:00",
    "2026-02-01T10:00:00+15:00",
    "2026-02-01T10:00",
    "2024-02-29",
    "2100-02-29",
    "1900-01-01",
    "2050-12-31",
    "-2026-01-01",
    "\t23\n",
    "a\u{85}b",
    "a\u{A0}b",
    "a\tb",
    "a  b",
    "&#9;x&#10;",
    "PL ",
    "0 kr",
    "np  I",
    "GTU_1",
    "WDT",
    "2050-01-01T23:00:00-01:00",
    "2025-09-01T00:30:00+01:00",
    "2050-01-01T23:59:59",
    "2025-09-01T00:00:00",
    "2026-02-01T10:00:00",
];

const FOREIGN_NAMES: &[&str] = &[
    "Nieznany", "P_99", "Faktura", "NIP", "Adres", "P_1", "FaWiersz", "KodKraju", "Nazwa", "P_13_1",
];

/// The declaration an element resolves to, walking down from the root; `None` off-schema.
fn decl_of(tree: &Tree, id: usize) -> Option<ElemId> {
    let schema = xsd_schema::fa3();
    let node = &tree.nodes[id];
    match node.parent {
        None => schema
            .globals
            .get(&QName {
                ns: node.ns.to_string(),
                local: node.local.to_string(),
            })
            .copied(),
        Some(p) => {
            let pd = decl_of(tree, p)?;
            match schema.elements[pd].ty {
                TypeRef::Complex(c) => match &schema.complex[c].content {
                    Content::Elements { names, .. } => names.get(schema, &node.ns, node.local),
                    _ => None,
                },
                TypeRef::Simple(_) => None,
            }
        }
    }
}

/// Names the schema allows somewhere in this element's parent: renaming to one of them
/// switches choice branches and breaks order in ways a random name never does.
fn sibling_names(tree: &Tree, id: usize) -> Vec<String> {
    let schema = xsd_schema::fa3();
    let Some(p) = tree.nodes[id].parent else { return Vec::new() };
    let Some(pd) = decl_of(tree, p) else { return Vec::new() };
    match schema.elements[pd].ty {
        TypeRef::Complex(c) => match &schema.complex[c].content {
            Content::Elements { names, .. } => names.ids.iter().map(|&e| schema.elements[e].name.local.clone()).collect(),
            _ => Vec::new(),
        },
        TypeRef::Simple(_) => Vec::new(),
    }
}

fn elements(tree: &Tree) -> Vec<usize> {
    (1..tree.nodes.len()).collect()
}

/// One mutant of `src`, with a short description of what was done.
pub fn mutate(src: &str, rng: &mut Rng) -> (String, String) {
    let tree = parse(src, &Lines::new(src.as_bytes()), 0).expect("mutation sources are well-formed");
    let all = elements(&tree);
    let id = *rng.pick(&all);
    let n = &tree.nodes[id];
    let (s, e) = n.span;
    let leaf = !n.has_children();
    let splice = |at: usize, to: usize, with: &str| format!("{}{}{}", &src[..at], with, &src[to..]);
    let rename = |new: &str| {
        let prefix = n.qname.split_once(':').map(|(p, _)| format!("{p}:")).unwrap_or_default();
        let new_q = format!("{prefix}{new}");
        let mut out = String::new();
        out.push_str(&src[..s + 1]);
        out.push_str(&new_q);
        if n.content.1 > n.content.0 || src[s..e].ends_with(&format!("</{}>", n.qname)) {
            let end_tag = n.content.1;
            out.push_str(&src[s + 1 + n.qname.len()..end_tag + 2]);
            out.push_str(&new_q);
            out.push_str(&src[end_tag + 2 + n.qname.len()..]);
        } else {
            out.push_str(&src[s + 1 + n.qname.len()..]);
        }
        out
    };
    match rng.below(18) {
        0 | 1 => (splice(s, e, ""), format!("delete {}", n.local)),
        2 => (splice(e, e, &src[s..e]), format!("duplicate {}", n.local)),
        3 | 4 => {
            let parent = n.parent.unwrap_or(0);
            let sibs = tree.children(parent);
            let pos = sibs.iter().position(|&c| c == id).unwrap_or(0);
            if pos + 1 < sibs.len() {
                let other = &tree.nodes[sibs[pos + 1]];
                let (s2, e2) = other.span;
                let out = format!("{}{}{}{}{}", &src[..s], &src[s2..e2], &src[e..s2], &src[s..e], &src[e2..]);
                (out, format!("swap {} with {}", n.local, other.local))
            } else if pos > 0 {
                let first = &tree.nodes[sibs[0]];
                let out = format!("{}{}{}{}", &src[..first.span.0], &src[s..e], &src[first.span.0..s], &src[e..]);
                (out, format!("move {} first", n.local))
            } else {
                (splice(s, e, ""), format!("delete only child {}", n.local))
            }
        }
        5 => {
            let new = rng.pick(FOREIGN_NAMES).to_string();
            (rename(&new), format!("rename {} to {new}", n.local))
        }
        6 => {
            let schema_names = sibling_names(&tree, id);
            let new = if !schema_names.is_empty() && rng.below(3) > 0 {
                rng.pick(&schema_names).clone()
            } else {
                tree.nodes[*rng.pick(&all)].local.to_string()
            };
            (rename(&new), format!("rename {} to {new}", n.local))
        }
        7 => {
            // Same name, foreign namespace.
            let ins = s + 1 + n.qname.len();
            let ns = if rng.below(2) == 0 {
                "http://crd.gov.pl/wzor/2023/06/29/12648/"
            } else {
                "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/"
            };
            let prefix = n.qname.split_once(':').map(|(p, _)| p.to_string());
            let decl = match prefix {
                Some(p) => format!(" xmlns:{p}=\"{ns}\""),
                None => format!(" xmlns=\"{ns}\""),
            };
            (splice(ins, ins, &decl), format!("namespace of {} to {ns}", n.local))
        }
        8..=10 | 15 | 17 if leaf && n.content.1 >= n.content.0 && !src[s..e].ends_with("/>") => {
            let v = rng.pick(BAD_VALUES).to_string();
            (splice(n.content.0, n.content.1, &v), format!("value of {} to {v:?}", n.local))
        }
        11 if leaf && !src[s..e].ends_with("/>") => {
            let old = &src[n.content.0..n.content.1];
            let v = match rng.below(6) {
                0 => format!("  {old}\n\t"),
                1 => format!("{old}0"),
                2 => old.chars().skip(1).collect(),
                3 => format!("{old}{old}"),
                4 => old.replace(' ', "  "),
                _ => format!("{old} x"),
            };
            (splice(n.content.0, n.content.1, &v), format!("value of {} to {v:?}", n.local))
        }
        12 => {
            let ins = s + 1 + n.qname.len();
            match (n.attrs.first(), rng.below(3)) {
                (Some(a), 0) => {
                    let t = &src[s..e];
                    let at = t.find(&format!("{}=", a.qname)).map(|i| s + i);
                    match at {
                        Some(i) => {
                            let q = src.as_bytes()[i + a.qname.len() + 1] as char;
                            let close = src[i + a.qname.len() + 2..]
                                .find(q)
                                .map(|j| i + a.qname.len() + 2 + j + 1)
                                .unwrap_or(i);
                            (splice(i, close, ""), format!("remove attribute {} of {}", a.qname, n.local))
                        }
                        None => (splice(ins, ins, " foo=\"1\""), format!("attribute foo on {}", n.local)),
                    }
                }
                (Some(a), 1) => {
                    let t = &src[s..e];
                    match t.find(&format!("{}=\"", a.qname)) {
                        Some(i) => {
                            let from = s + i + a.qname.len() + 2;
                            let to = from + src[from..].find('"').unwrap_or(0);
                            let v = *rng.pick(&["x", "FA(3)", "FA (2)", "1-0E ", "1-0", "", "date", "RAD"]);
                            (splice(from, to, v), format!("attribute {} of {} to {v:?}", a.qname, n.local))
                        }
                        None => (splice(ins, ins, " foo=\"1\""), format!("attribute foo on {}", n.local)),
                    }
                }
                _ => {
                    let a = *rng.pick(&[
                        " foo=\"1\"",
                        " kodSystemowy=\"FA (3)\"",
                        " xsi:nil=\"true\"",
                        " xml:lang=\"pl\"",
                        " xsi:schemaLocation=\"a b\"",
                        " xsi:type=\"TZnakowy\"",
                        " xsi:type=\"etd:TZnakowy\"",
                    ]);
                    (splice(ins, ins, a), format!("add attribute{a} to {}", n.local))
                }
            }
        }
        16 => {
            // The element emptied: `<X/>`, attributes dropped.
            let empty = format!("<{}/>", n.qname);
            (splice(s, e, &empty), format!("empty {}", n.local))
        }
        13 if !leaf => {
            let at = tree.nodes[tree.children(id)[0]].span.1;
            let t = *rng.pick(&["abc", " ", "&#160;", "<!-- a comment -->", "<?pi x?>"]);
            (splice(at, at, t), format!("insert {t:?} into {}", n.local))
        }
        14 => {
            let t = *rng.pick(&[
                "<Nieznany>1</Nieznany>",
                "<P_1>2026-01-01</P_1>",
                "<etd:NIP>5265877635</etd:NIP>",
                "<Uwagi/>",
            ]);
            let at = if rng.below(2) == 0 { s } else { e };
            (splice(at, at, t), format!("insert {t} near {}", n.local))
        }
        _ => {
            // A copy of a random element moved elsewhere.
            let other = &tree.nodes[*rng.pick(&all)];
            let piece = src[other.span.0..other.span.1].to_string();
            let at = if rng.below(2) == 0 { s } else { e };
            (splice(at, at, &piece), format!("copy {} next to {}", other.local, n.local))
        }
    }
}
