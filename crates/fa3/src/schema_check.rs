//! Structural validation of a parsed invoice against the compiled FA(3) schema: root and
//! namespace, element order and cardinality, attributes, text where none is allowed, and every
//! simple value against its type's facets. All problems are collected, not only the first.

use crate::findings::{Category, Finding, Severity};
use crate::xml_tree::{Node, Tree};
use crate::xsd_schema::{Content, ElemId, QName, Schema, SimpleId, TypeRef, ETD_NAMESPACE};
use crate::FA3_NAMESPACE;

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

pub struct SchemaCheck<'a> {
    pub schema: &'a Schema,
    pub tree: &'a Tree<'a>,
    pub findings: &'a mut Vec<Finding>,
    /// The declarations of the children of the elements being checked, one block per level of
    /// the recursion (one buffer per document instead of one per element).
    pub kids: Vec<Option<ElemId>>,
}

/// A short human name for a declared element, (Polish, English): its name and the schema's
/// own description; the schema glosses some in English in brackets, which the English one uses.
pub fn describe(schema: &Schema, id: ElemId) -> (String, String) {
    let d = &schema.elements[id];
    let short = |t: &str| {
        let s: String = t.chars().take(70).collect();
        let ell = if s.len() < t.len() { "…" } else { "" };
        format!("{} ({s}{ell})", d.name.local)
    };
    match &d.doc {
        Some(doc) => match (doc.find('['), doc.rfind(']')) {
            (Some(a), Some(b)) if a < b => (short(doc[..a].trim()), short(&doc[a + 1..b])),
            _ => (short(doc), short(doc)),
        },
        None => (d.name.local.clone(), d.name.local.clone()),
    }
}

fn names_list(schema: &Schema, ids: &[ElemId]) -> String {
    let mut v: Vec<String> = ids.iter().map(|&i| schema.elements[i].name.local.clone()).collect();
    v.dedup();
    if v.len() > 12 {
        v.truncate(12);
        v.push("…".into());
    }
    v.join(", ")
}

/// Names the schema people send by mistake.
pub fn foreign_schema_hint(ns: &str) -> (&'static str, &'static str) {
    if ns.contains("2023/06/29/12648") {
        (
            " To jest FA(2), którego KSeF nie przyjmuje już na PRD/DEMO; relay wysyła FA(3).",
            " This is FA(2), which KSeF no longer accepts on PRD/DEMO; the relay sends FA(3).",
        )
    } else if ns.contains("oasis") || ns.contains("peppol") {
        (
            " To wygląda na dokument PEF/UBL, wysyłany z innym kodem formularza.",
            " This looks like a PEF/UBL document, which is sent under another form code.",
        )
    } else {
        ("", "")
    }
}

impl SchemaCheck<'_> {
    fn push(&mut self, node: usize, code: &'static str, pl: String, en: String) {
        self.findings.push(Finding {
            code,
            category: Category::Schema,
            severity: Severity::Error,
            path: self.tree.path(node),
            line: self.tree.nodes[node].line,
            message_pl: pl,
            message_en: en,
        });
    }

    pub fn run(&mut self) {
        let root = &self.tree.nodes[0];
        let key = QName {
            ns: root.ns.to_string(),
            local: root.local.to_string(),
        };
        match self.schema.globals.get(&key) {
            Some(&decl) => self.element(0, decl),
            None if root.local == "Faktura" || &*root.ns != FA3_NAMESPACE => {
                let shown = if root.ns.is_empty() {
                    "(brak / none)".to_string()
                } else {
                    root.ns.to_string()
                };
                let (hpl, hen) = foreign_schema_hint(&root.ns);
                self.push(
                    0,
                    "schema.namespace",
                    format!(
                        "Element główny <{}> ma przestrzeń nazw {shown}; FA(3) wymaga {FA3_NAMESPACE}.{hpl}",
                        root.local
                    ),
                    format!(
                        "The root element <{}> is in namespace {shown}; FA(3) requires {FA3_NAMESPACE}.{hen}",
                        root.local
                    ),
                );
            }
            None => self.push(
                0,
                "schema.root",
                format!("Element główny to <{}>; faktura FA(3) zaczyna się od <Faktura>.", root.local),
                format!("The root element is <{}>; an FA(3) invoice starts with <Faktura>.", root.local),
            ),
        }
    }

    fn element(&mut self, id: usize, decl: ElemId) {
        let node = &self.tree.nodes[id];
        let d = &self.schema.elements[decl];
        self.xsi_type(id, decl);
        match d.ty {
            TypeRef::Simple(st) => {
                self.no_attributes_but_xsi(id, &[]);
                if let Some(&child) = self.tree.children(id).first() {
                    self.push(
                        child,
                        "schema.unexpected",
                        format!(
                            "Pole {} zawiera tylko wartość, nie może zawierać elementu <{}>.",
                            d.name.local, self.tree.nodes[child].local
                        ),
                        format!(
                            "Field {} holds a value only; it cannot contain element <{}>.",
                            d.name.local, self.tree.nodes[child].local
                        ),
                    );
                }
                self.value(id, decl, st);
            }
            TypeRef::Complex(ct) => {
                let ct = &self.schema.complex[ct];
                self.attributes(id, ct);
                match &ct.content {
                    Content::Empty => {
                        if node.has_children() || node.has_text() {
                            self.push(
                                id,
                                "schema.not_empty",
                                format!("Element {} musi być pusty.", d.name.local),
                                format!("Element {} must be empty.", d.name.local),
                            );
                        }
                    }
                    Content::Simple(st) => {
                        if let Some(&child) = self.tree.children(id).first() {
                            self.push(
                                child,
                                "schema.unexpected",
                                format!(
                                    "Pole {} zawiera tylko wartość, nie może zawierać elementu <{}>.",
                                    d.name.local, self.tree.nodes[child].local
                                ),
                                format!(
                                    "Field {} holds a value only; it cannot contain element <{}>.",
                                    d.name.local, self.tree.nodes[child].local
                                ),
                            );
                        }
                        self.value(id, decl, *st);
                    }
                    Content::Elements { particle, names } => {
                        if node.has_text() {
                            let t: String = node.text.trim().chars().take(40).collect();
                            self.push(
                                id,
                                "schema.text",
                                format!(
                                    "Element {} zawiera tekst \"{t}\" poza polami; dozwolone są tylko elementy.",
                                    d.name.local
                                ),
                                format!(
                                    "Element {} contains text \"{t}\" outside any field; only elements are allowed there.",
                                    d.name.local
                                ),
                            );
                        }
                        let base = self.kids.len();
                        let (schema, tree) = (self.schema, self.tree);
                        self.kids.extend(
                            tree.children(id)
                                .iter()
                                .map(|&c| names.get(schema, &tree.nodes[c].ns, tree.nodes[c].local)),
                        );
                        if let Some(m) = crate::content_model::check(particle, &names.ids, &self.kids[base..]) {
                            self.content_mismatch(id, decl, m);
                        }
                        for (i, &c) in tree.children(id).iter().enumerate() {
                            if let Some(cd) = self.kids[base + i] {
                                self.element(c, cd);
                            }
                        }
                        self.kids.truncate(base);
                    }
                }
            }
        }
    }

    fn content_mismatch(&mut self, id: usize, decl: ElemId, m: crate::content_model::Mismatch) {
        use crate::content_model::Mismatch;
        let parent = self.schema.elements[decl].name.local.clone();
        match m {
            Mismatch::Unexpected { index, expected } => {
                let child = self.tree.children(id)[index];
                let cn = &self.tree.nodes[child];
                let known = match &self.schema.complex_of(decl).map(|c| &c.content) {
                    Some(Content::Elements { names, .. }) => names.has_local(cn.local),
                    _ => false,
                };
                let wrong_ns = known
                    && !matches!(&*cn.ns, FA3_NAMESPACE | ETD_NAMESPACE)
                    && !expected
                        .iter()
                        .any(|&e| self.schema.elements[e].name.local == cn.local && *self.schema.elements[e].name.ns == *cn.ns);
                let (pl_hint, en_hint) = if expected.is_empty() {
                    (
                        "w tym miejscu nie może już być żadnego elementu".to_string(),
                        "no further element may appear here".to_string(),
                    )
                } else if expected.len() == 1 {
                    let (e_pl, e_en) = describe(self.schema, expected[0]);
                    (format!("w tym miejscu oczekiwano pola {e_pl}"), format!("expected here: {e_en}"))
                } else {
                    let l = names_list(self.schema, &expected);
                    (
                        format!("w tym miejscu oczekiwano jednego z: {l}"),
                        format!("expected here one of: {l}"),
                    )
                };
                let ns_note = if wrong_ns {
                    " (zła przestrzeń nazw / wrong namespace)"
                } else {
                    ""
                };
                let (code, pl, en) = if known && !wrong_ns {
                    (
                        "schema.order",
                        format!(
                            "Pole <{}>{ns_note} w {parent} jest w złym miejscu lub powtórzone za wiele razy: {pl_hint}.",
                            cn.local
                        ),
                        format!(
                            "Field <{}>{ns_note} in {parent} is out of order or repeated too often: {en_hint}.",
                            cn.local
                        ),
                    )
                } else {
                    (
                        "schema.unexpected",
                        format!("Element <{}>{ns_note} nie jest dozwolony w {parent}: {pl_hint}.", cn.local),
                        format!("Element <{}>{ns_note} is not allowed in {parent}: {en_hint}.", cn.local),
                    )
                };
                self.push(child, code, pl, en);
            }
            Mismatch::MissingBefore { index, missing } => {
                let child = self.tree.children(id)[index];
                let before = self.tree.nodes[child].local;
                let (pl, en) = if missing.len() == 1 {
                    let (e_pl, e_en) = describe(self.schema, missing[0]);
                    (
                        format!("Brakuje wymaganego pola {e_pl} w {parent} (przed <{before}>)."),
                        format!("Required field {e_en} is missing in {parent} (before <{before}>)."),
                    )
                } else {
                    let l = names_list(self.schema, &missing);
                    (
                        format!("Brakuje wymaganego pola w {parent} przed <{before}>: oczekiwano jednego z: {l}."),
                        format!("A required field is missing in {parent} before <{before}>: expected one of: {l}."),
                    )
                };
                self.push(child, "schema.missing", pl, en);
            }
            Mismatch::Incomplete { expected } => {
                let (pl, en) = if expected.len() == 1 {
                    let (e_pl, e_en) = describe(self.schema, expected[0]);
                    (
                        format!("Brakuje wymaganego pola {e_pl} w {parent}."),
                        format!("Required field {e_en} is missing in {parent}."),
                    )
                } else {
                    let l = names_list(self.schema, &expected);
                    (
                        format!("Brakuje wymaganego pola w {parent}: oczekiwano jednego z: {l}."),
                        format!("A required field is missing in {parent}: expected one of: {l}."),
                    )
                };
                self.push(id, "schema.missing", pl, en);
            }
        }
    }

    /// `xsi:type` may only restate the declared type: FA(3) derives no types meant for
    /// substitution, and any other type would change what the element may contain.
    fn xsi_type(&mut self, id: usize, decl: ElemId) {
        let node = &self.tree.nodes[id];
        let Some(a) = node.attrs.iter().find(|a| a.ns == XSI && a.local == "type") else {
            return;
        };
        let named = a.value_qname.as_ref().and_then(|(ns, local)| {
            self.schema.named.get(&QName {
                ns: ns.clone(),
                local: local.clone(),
            })
        });
        let same = match (named, self.schema.elements[decl].ty) {
            (Some(TypeRef::Simple(a)), TypeRef::Simple(b)) | (Some(TypeRef::Complex(a)), TypeRef::Complex(b)) => *a == b,
            _ => false,
        };
        if !same {
            self.push(
                id,
                "schema.xsi",
                format!(
                    "Atrybut xsi:type=\"{}\" zmienia typ elementu {}; w FA(3) jest niedozwolony.",
                    a.value, node.local
                ),
                format!(
                    "Attribute xsi:type=\"{}\" changes the type of {}; FA(3) does not allow that.",
                    a.value, node.local
                ),
            );
        }
    }

    fn no_attributes_but_xsi(&mut self, id: usize, allowed: &[crate::xsd_schema::AttributeDecl]) {
        let node = &self.tree.nodes[id];
        for a in &node.attrs {
            if a.ns == XSI {
                if !matches!(a.local.as_str(), "schemaLocation" | "noNamespaceSchemaLocation" | "type") {
                    self.push(
                        id,
                        "schema.xsi",
                        format!("Atrybut {} nie jest dozwolony w fakturze FA(3).", a.qname),
                        format!("Attribute {} is not allowed in an FA(3) invoice.", a.qname),
                    );
                }
            } else if !(a.ns.is_empty() && allowed.iter().any(|d| d.name.local == a.local)) {
                self.push(
                    id,
                    "schema.attribute_unknown",
                    format!("Element {} nie może mieć atrybutu {}.", node.local, a.qname),
                    format!("Element {} cannot have attribute {}.", node.local, a.qname),
                );
            }
        }
    }

    fn attributes(&mut self, id: usize, ct: &crate::xsd_schema::ComplexType) {
        let node: &Node = &self.tree.nodes[id];
        self.no_attributes_but_xsi(id, &ct.attributes);
        for decl in &ct.attributes {
            let found = node.attrs.iter().find(|a| a.ns.is_empty() && a.local == decl.name.local);
            match found {
                None if decl.required => self.push(
                    id,
                    "schema.attribute_missing",
                    format!("Element {} musi mieć atrybut {}.", node.local, decl.name.local),
                    format!("Element {} must have attribute {}.", node.local, decl.name.local),
                ),
                None => {}
                Some(a) => {
                    if let Err(p) = self.schema.check_value(decl.ty, &a.value) {
                        self.push(
                            id,
                            p.code,
                            format!("Atrybut {} elementu {}: {}.", decl.name.local, node.local, p.pl),
                            format!("Attribute {} of {}: {}.", decl.name.local, node.local, p.en),
                        );
                    } else if let Some(fixed) = &decl.fixed {
                        if !self.same_value(decl.ty, &a.value, fixed) {
                            self.push(
                                id,
                                "schema.fixed",
                                format!(
                                    "Atrybut {} elementu {} musi mieć wartość \"{fixed}\", a ma \"{}\".",
                                    decl.name.local, node.local, a.value
                                ),
                                format!(
                                    "Attribute {} of {} must be \"{fixed}\", not \"{}\".",
                                    decl.name.local, node.local, a.value
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    fn same_value(&self, ty: SimpleId, a: &str, b: &str) -> bool {
        use crate::xsd_schema::SimpleType;
        match &self.schema.simple[ty] {
            SimpleType::Atomic { builtin, whitespace, .. } => {
                let (x, y) = (whitespace.apply(a), whitespace.apply(b));
                match (builtin.parse(&x), builtin.parse(&y)) {
                    (Ok(crate::xsd_values::Value::Str(s)), Ok(crate::xsd_values::Value::Str(t))) => s == t,
                    (Ok(p), Ok(q)) => p.compare(&q) == Some(std::cmp::Ordering::Equal),
                    _ => x == y,
                }
            }
            SimpleType::Union { .. } => a == b,
        }
    }

    fn value(&mut self, id: usize, decl: ElemId, st: SimpleId) {
        let node = &self.tree.nodes[id];
        let d = &self.schema.elements[decl];
        let raw: &str = &node.text;
        // An empty element with a fixed value takes that value.
        let effective = match &d.fixed {
            Some(f) if raw.is_empty() => f.as_str(),
            _ => raw,
        };
        if let Err(p) = self.schema.check_value(st, effective) {
            let (what_pl, what_en) = describe(self.schema, decl);
            self.push(
                id,
                p.code,
                format!("Pole {what_pl}: {}.", p.pl),
                format!("Field {what_en}: {}.", p.en),
            );
            return;
        }
        if let Some(fixed) = &d.fixed {
            if !self.same_value(st, effective, fixed) {
                self.push(
                    id,
                    "schema.fixed",
                    format!("Pole {} musi mieć wartość \"{fixed}\".", d.name.local),
                    format!("Field {} must be \"{fixed}\".", d.name.local),
                );
            }
        }
    }
}

impl Schema {
    fn complex_of(&self, decl: ElemId) -> Option<&crate::xsd_schema::ComplexType> {
        match self.elements[decl].ty {
            TypeRef::Complex(c) => Some(&self.complex[c]),
            TypeRef::Simple(_) => None,
        }
    }
}
