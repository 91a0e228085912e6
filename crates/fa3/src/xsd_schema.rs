//! The bundled FA(3) XSDs compiled into a content model, once, at first use.
//!
//! The four official files (`data/ksef/schemas/`) are embedded with `include_str!`. The FA(3)
//! file imports `StrukturyDanych` by an absolute URL on crd.gov.pl; that import is mapped to the
//! embedded copy (its `schemaLocation` is never fetched), and `StrukturyDanych` includes
//! `ElementarneTypyDanych`, which includes `KodyKrajow`, all in the `etd` namespace.
//!
//! Only the XSD constructs these schemas use are supported (sequence, choice, local elements,
//! named and anonymous types, complex/simple content extension, attributes, simple type
//! restriction and union, and the facets listed in [`Facet`]); anything else makes the load
//! fail, which the crate's tests would catch, rather than being skipped.

use std::collections::HashMap;
use std::sync::OnceLock;

use quick_xml::events::Event;
use regex::Regex;

use crate::xsd_regex;
use crate::xsd_values::{Builtin, Decimal, Value, WhiteSpace};

const XS: &str = "http://www.w3.org/2001/XMLSchema";
/// The namespace of the base structures the FA(3) schema imports.
pub const ETD_NAMESPACE: &str = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/";

const FA3_XSD: &str = include_str!("../../../data/ksef/schemas/schemat_FA(3)_v1-0E.xsd");
const STRUKTURY_XSD: &str = include_str!("../../../data/ksef/schemas/StrukturyDanych_v10-0E.xsd");
const ELEMENTARNE_XSD: &str = include_str!("../../../data/ksef/schemas/ElementarneTypyDanych_v10-0E.xsd");
const KODY_XSD: &str = include_str!("../../../data/ksef/schemas/KodyKrajow_v10-0E.xsd");

pub type ElemId = usize;
pub type SimpleId = usize;
pub type ComplexId = usize;

/// A namespace-qualified name; the namespace is `""` for unqualified attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QName {
    pub ns: String,
    pub local: String,
}

#[derive(Debug, Clone, Copy)]
pub enum TypeRef {
    Simple(SimpleId),
    Complex(ComplexId),
}

#[derive(Debug)]
pub struct ElementDecl {
    pub name: QName,
    pub ty: TypeRef,
    pub fixed: Option<String>,
    /// The schema's own description of the field (Polish, sometimes with an English gloss in brackets).
    pub doc: Option<String>,
}

#[derive(Debug)]
pub enum Term {
    Element(ElemId),
    Sequence(Vec<Particle>),
    Choice(Vec<Particle>),
}

#[derive(Debug)]
pub struct Particle {
    pub min: u32,
    /// `u32::MAX` for unbounded.
    pub max: u32,
    pub term: Term,
}

#[derive(Debug)]
pub struct AttributeDecl {
    pub name: QName,
    pub ty: SimpleId,
    pub required: bool,
    pub fixed: Option<String>,
}

#[derive(Debug)]
pub enum Content {
    Empty,
    /// Element-only content; `names` finds the (unique) declaration for a child name, and the
    /// particle refers to those same declarations, so matching compares ids, not strings.
    Elements {
        particle: Particle,
        names: ElementNames,
    },
    Simple(SimpleId),
}

/// A word-at-a-time multiplicative hash (as rustc's FxHash): the name maps are small and hashed
/// per child element; SipHash's flood resistance buys nothing for keys that come from the
/// schema, and a byte-at-a-time FNV costs a multiplication per byte.
#[derive(Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))).wrapping_mul(K);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(last) ^ rest.len() as u64).wrapping_mul(K);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// The child element declarations of one content model, by local name.
#[derive(Debug, Default)]
pub struct ElementNames {
    by_local: FnvMap<String, Vec<ElemId>>,
    /// Every declaration, sorted.
    pub ids: Vec<ElemId>,
}

impl ElementNames {
    /// The declaration for a child with this namespace and local name.
    pub fn get(&self, schema: &Schema, ns: &str, local: &str) -> Option<ElemId> {
        self.by_local
            .get(local)?
            .iter()
            .copied()
            .find(|&id| schema.elements[id].name.ns == ns)
    }

    /// Whether some declaration has this local name (in any namespace).
    pub fn has_local(&self, local: &str) -> bool {
        self.by_local.contains_key(local)
    }
}

#[derive(Debug)]
pub struct ComplexType {
    pub attributes: Vec<AttributeDecl>,
    pub content: Content,
}

/// One constraining facet; each restriction step adds its own, and all of them apply.
#[derive(Debug)]
pub enum Facet {
    Length(usize),
    MinLength(usize),
    MaxLength(usize),
    /// The patterns of one derivation step: the value must match one of them.
    Patterns(Vec<(String, Regex)>),
    /// The enumeration of one derivation step, as lexical values and parsed values (in the
    /// schema's order, for messages), and for string types the values sorted, for a binary
    /// search instead of a scan (country and currency codes run to hundreds).
    Enumeration(Vec<(String, Value)>, Vec<String>),
    TotalDigits(usize),
    FractionDigits(usize),
    MinInclusive(Value, String),
    MaxInclusive(Value, String),
    MinExclusive(Value, String),
    MaxExclusive(Value, String),
}

#[derive(Debug)]
pub enum SimpleType {
    Atomic {
        builtin: Builtin,
        whitespace: WhiteSpace,
        facets: Vec<Facet>,
        name: Option<String>,
    },
    Union {
        members: Vec<SimpleId>,
        name: Option<String>,
    },
}

/// The compiled schema.
#[derive(Debug)]
pub struct Schema {
    pub elements: Vec<ElementDecl>,
    pub complex: Vec<ComplexType>,
    pub simple: Vec<SimpleType>,
    pub globals: HashMap<QName, ElemId>,
    /// Named types (and the built-ins in use), for `xsi:type`.
    pub named: HashMap<QName, TypeRef>,
}

/// The FA(3) schema, compiled on first use.
pub fn fa3() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| load().unwrap_or_else(|e| panic!("the bundled FA(3) schema does not compile: {e}")))
}

/// Compiles the bundled schemas; an error names the unsupported construct.
pub fn load() -> Result<Schema, String> {
    let docs = vec![
        parse_xsd(FA3_XSD)?,
        parse_xsd(STRUKTURY_XSD)?,
        parse_xsd(ELEMENTARNE_XSD)?,
        parse_xsd(KODY_XSD)?,
    ];
    Compiler::new(&docs)?.run()
}

// ---- a minimal DOM of the schema documents --------------------------------------------------

#[derive(Debug)]
struct XNode {
    local: String,
    ns: String,
    attrs: Vec<(String, String)>,
    /// In-scope prefix bindings, to resolve QName-valued attributes (`type="etd:TAdres"`).
    prefixes: Vec<(String, String)>,
    children: Vec<XNode>,
    text: String,
}

impl XNode {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn xs_children(&self) -> impl Iterator<Item = &XNode> {
        self.children.iter().filter(|c| c.ns == XS && c.local != "annotation")
    }

    fn resolve(&self, qname: &str) -> Result<QName, String> {
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        let ns = self
            .prefixes
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.clone())
            .ok_or_else(|| format!("unbound prefix in {qname:?}"))?;
        Ok(QName {
            ns,
            local: local.to_string(),
        })
    }

    fn documentation(&self) -> Option<String> {
        let ann = self.children.iter().find(|c| c.local == "annotation")?;
        let doc = ann.children.iter().find(|c| c.local == "documentation")?;
        let t = doc.text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!t.is_empty()).then_some(t)
    }
}

fn parse_xsd(text: &str) -> Result<XNode, String> {
    let mut reader = quick_xml::reader::NsReader::from_str(text);
    let mut stack: Vec<XNode> = Vec::new();
    loop {
        let ev = reader.read_resolved_event().map_err(|e| e.to_string())?;
        let empty = matches!(ev.1, Event::Empty(_));
        match ev {
            (ns, Event::Start(e)) | (ns, Event::Empty(e)) => {
                let mut prefixes = stack
                    .last()
                    .map(|p| p.prefixes.clone())
                    .unwrap_or_else(|| vec![("xml".into(), "".into())]);
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
                    if key == "xmlns" {
                        prefixes.push((String::new(), value));
                    } else if let Some(p) = key.strip_prefix("xmlns:") {
                        prefixes.push((p.to_string(), value));
                    } else {
                        attrs.push((key, value));
                    }
                }
                let node = XNode {
                    local: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ns: match ns {
                        quick_xml::name::ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                        _ => String::new(),
                    },
                    attrs,
                    prefixes,
                    children: Vec::new(),
                    text: String::new(),
                };
                if empty {
                    match stack.last_mut() {
                        Some(p) => p.children.push(node),
                        None => return Ok(node),
                    }
                } else {
                    stack.push(node);
                }
            }
            (_, Event::Text(t)) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            (_, Event::End(_)) => {
                let node = stack.pop().ok_or("unbalanced schema")?;
                match stack.last_mut() {
                    Some(p) => p.children.push(node),
                    None => return Ok(node),
                }
            }
            (_, Event::Eof) => return Err("schema ended early".into()),
            _ => {}
        }
    }
}

// ---- compilation ----------------------------------------------------------------------------

struct Compiler<'a> {
    named_simple: HashMap<QName, &'a XNode>,
    named_complex: HashMap<QName, &'a XNode>,
    global_elements: Vec<(&'a XNode, String)>,
    simple_ids: HashMap<QName, SimpleId>,
    complex_ids: HashMap<QName, ComplexId>,
    builtin_ids: HashMap<&'static str, SimpleId>,
    schema: Schema,
}

fn occurs(node: &XNode) -> Result<(u32, u32), String> {
    let min = match node.attr("minOccurs") {
        Some(v) => v.parse().map_err(|_| format!("minOccurs {v:?}"))?,
        None => 1,
    };
    let max = match node.attr("maxOccurs") {
        Some("unbounded") => u32::MAX,
        Some(v) => v.parse().map_err(|_| format!("maxOccurs {v:?}"))?,
        None => 1,
    };
    Ok((min, max))
}

impl<'a> Compiler<'a> {
    fn new(docs: &'a [XNode]) -> Result<Self, String> {
        let mut c = Compiler {
            named_simple: HashMap::new(),
            named_complex: HashMap::new(),
            global_elements: Vec::new(),
            simple_ids: HashMap::new(),
            complex_ids: HashMap::new(),
            builtin_ids: HashMap::new(),
            schema: Schema {
                elements: Vec::new(),
                complex: Vec::new(),
                simple: Vec::new(),
                globals: HashMap::new(),
                named: HashMap::new(),
            },
        };
        for doc in docs {
            let tns = doc.attr("targetNamespace").unwrap_or("").to_string();
            if doc.attr("elementFormDefault") != Some("qualified") || doc.attr("attributeFormDefault").is_some_and(|v| v != "unqualified") {
                return Err("only elementFormDefault=qualified, attributeFormDefault=unqualified schemas are supported".into());
            }
            for child in doc.xs_children() {
                let name = || QName {
                    ns: tns.clone(),
                    local: child.attr("name").unwrap_or("").to_string(),
                };
                match child.local.as_str() {
                    "simpleType" => {
                        c.named_simple.insert(name(), child);
                    }
                    "complexType" => {
                        c.named_complex.insert(name(), child);
                    }
                    "element" => c.global_elements.push((child, tns.clone())),
                    // Imports and includes are resolved by bundling all four files.
                    "import" | "include" => {}
                    other => return Err(format!("top-level xsd:{other} is not supported")),
                }
            }
        }
        Ok(c)
    }

    fn run(mut self) -> Result<Schema, String> {
        let globals = std::mem::take(&mut self.global_elements);
        for (node, tns) in globals {
            let id = self.element(node, &tns)?;
            let name = self.schema.elements[id].name.clone();
            self.schema.globals.insert(name, id);
        }
        // Compile the named types nothing refers to as well, so an unsupported construct
        // anywhere in the files fails the load instead of hiding.
        let mut simple: Vec<QName> = self.named_simple.keys().cloned().collect();
        simple.sort_by(|a, b| (&a.ns, &a.local).cmp(&(&b.ns, &b.local)));
        for name in simple {
            self.named_simple_type(&name)?;
        }
        let mut complex: Vec<QName> = self.named_complex.keys().cloned().collect();
        complex.sort_by(|a, b| (&a.ns, &a.local).cmp(&(&b.ns, &b.local)));
        for name in complex {
            self.type_ref(&name)?;
        }
        for (name, &id) in &self.simple_ids {
            self.schema.named.insert(name.clone(), TypeRef::Simple(id));
        }
        for (name, &id) in &self.complex_ids {
            self.schema.named.insert(name.clone(), TypeRef::Complex(id));
        }
        for (&local, &id) in &self.builtin_ids {
            let name = QName {
                ns: XS.into(),
                local: local.into(),
            };
            self.schema.named.insert(name, TypeRef::Simple(id));
        }
        Ok(self.schema)
    }

    fn element(&mut self, node: &'a XNode, tns: &str) -> Result<ElemId, String> {
        if node.attr("ref").is_some() || node.attr("nillable").is_some() || node.attr("abstract").is_some() {
            return Err("element ref/nillable/abstract is not supported".into());
        }
        let local = node.attr("name").ok_or("element without a name")?.to_string();
        let ty = if let Some(t) = node.attr("type") {
            self.type_ref(&node.resolve(t)?)?
        } else if let Some(ct) = node.xs_children().find(|c| c.local == "complexType") {
            TypeRef::Complex(self.complex_type(ct, tns)?)
        } else if let Some(st) = node.xs_children().find(|c| c.local == "simpleType") {
            TypeRef::Simple(self.simple_type(st, None)?)
        } else {
            return Err(format!("element {local} without a type (anyType) is not supported"));
        };
        if node.attr("default").is_some() {
            return Err(format!("element {local}: default values are not supported"));
        }
        self.schema.elements.push(ElementDecl {
            name: QName {
                ns: tns.to_string(),
                local,
            },
            ty,
            fixed: node.attr("fixed").map(str::to_string),
            doc: node.documentation(),
        });
        Ok(self.schema.elements.len() - 1)
    }

    fn type_ref(&mut self, name: &QName) -> Result<TypeRef, String> {
        if name.ns == XS || self.named_simple.contains_key(name) {
            return Ok(TypeRef::Simple(self.named_simple_type(name)?));
        }
        if let Some(&id) = self.complex_ids.get(name) {
            return Ok(TypeRef::Complex(id));
        }
        let node = *self
            .named_complex
            .get(name)
            .ok_or_else(|| format!("unknown type {}:{}", name.ns, name.local))?;
        let id = self.complex_type(node, &name.ns.clone())?;
        self.complex_ids.insert(name.clone(), id);
        Ok(TypeRef::Complex(id))
    }

    fn named_simple_type(&mut self, name: &QName) -> Result<SimpleId, String> {
        if name.ns == XS {
            let builtin =
                Builtin::from_local_name(&name.local).ok_or_else(|| format!("built-in type xsd:{} is not supported", name.local))?;
            let key: &'static str = match builtin {
                Builtin::String => "string",
                Builtin::NormalizedString => "normalizedString",
                Builtin::Token => "token",
                Builtin::Decimal => "decimal",
                Builtin::Integer => "integer",
                Builtin::Int => "int",
                Builtin::Byte => "byte",
                Builtin::NonNegativeInteger => "nonNegativeInteger",
                Builtin::Date => "date",
                Builtin::DateTime => "dateTime",
                Builtin::GYear => "gYear",
            };
            if let Some(&id) = self.builtin_ids.get(key) {
                return Ok(id);
            }
            self.schema.simple.push(SimpleType::Atomic {
                builtin,
                whitespace: builtin.whitespace(),
                facets: Vec::new(),
                name: Some(format!("xsd:{key}")),
            });
            let id = self.schema.simple.len() - 1;
            self.builtin_ids.insert(key, id);
            return Ok(id);
        }
        if let Some(&id) = self.simple_ids.get(name) {
            return Ok(id);
        }
        let node = *self
            .named_simple
            .get(name)
            .ok_or_else(|| format!("unknown simple type {}", name.local))?;
        let id = self.simple_type(node, Some(name.local.clone()))?;
        self.simple_ids.insert(name.clone(), id);
        Ok(id)
    }

    fn simple_type(&mut self, node: &'a XNode, name: Option<String>) -> Result<SimpleId, String> {
        let body = node.xs_children().next().ok_or("empty simpleType")?;
        match body.local.as_str() {
            "restriction" => {
                let base = match body.attr("base") {
                    Some(b) => self.named_simple_type(&body.resolve(b)?)?,
                    None => {
                        let inner = body
                            .xs_children()
                            .find(|c| c.local == "simpleType")
                            .ok_or("restriction without a base")?;
                        self.simple_type(inner, None)?
                    }
                };
                self.restrict(base, body, name)
            }
            "union" => {
                let mut members = Vec::new();
                if let Some(list) = body.attr("memberTypes") {
                    for m in list.split_whitespace() {
                        members.push(self.named_simple_type(&body.resolve(m)?)?);
                    }
                }
                for inner in body.xs_children().filter(|c| c.local == "simpleType") {
                    members.push(self.simple_type(inner, None)?);
                }
                self.schema.simple.push(SimpleType::Union { members, name });
                Ok(self.schema.simple.len() - 1)
            }
            other => Err(format!("xsd:{other} simple types are not supported")),
        }
    }

    /// A restriction step: the base's facets plus this step's.
    fn restrict(&mut self, base: SimpleId, body: &XNode, name: Option<String>) -> Result<SimpleId, String> {
        let (builtin, mut whitespace, base_facets) = match &self.schema.simple[base] {
            SimpleType::Atomic {
                builtin,
                whitespace,
                facets,
                ..
            } => (*builtin, *whitespace, facets),
            SimpleType::Union { .. } => return Err("restriction of a union is not supported".into()),
        };
        let mut facets: Vec<Facet> = base_facets.iter().map(clone_facet).collect();
        let mut patterns = Vec::new();
        let mut enumeration = Vec::new();
        let value_of = |v: &str| -> Result<Value, String> {
            builtin
                .parse(&builtin.whitespace().apply(v))
                .map_err(|_| format!("facet value {v:?} does not fit {builtin:?}"))
        };
        for f in body.xs_children() {
            let v = f.attr("value").ok_or_else(|| format!("facet {} without a value", f.local))?;
            let n = || v.parse::<usize>().map_err(|_| format!("facet {} value {v:?}", f.local));
            match f.local.as_str() {
                "length" => facets.push(Facet::Length(n()?)),
                "minLength" => facets.push(Facet::MinLength(n()?)),
                "maxLength" => facets.push(Facet::MaxLength(n()?)),
                "totalDigits" => facets.push(Facet::TotalDigits(n()?)),
                "fractionDigits" => facets.push(Facet::FractionDigits(n()?)),
                "pattern" => patterns.push((v.to_string(), xsd_regex::compile(v)?)),
                "enumeration" => enumeration.push((v.to_string(), value_of(v)?)),
                "minInclusive" => facets.push(Facet::MinInclusive(value_of(v)?, v.to_string())),
                "maxInclusive" => facets.push(Facet::MaxInclusive(value_of(v)?, v.to_string())),
                "minExclusive" => facets.push(Facet::MinExclusive(value_of(v)?, v.to_string())),
                "maxExclusive" => facets.push(Facet::MaxExclusive(value_of(v)?, v.to_string())),
                "whiteSpace" => {
                    whitespace = match v {
                        "preserve" => WhiteSpace::Preserve,
                        "replace" => WhiteSpace::Replace,
                        "collapse" => WhiteSpace::Collapse,
                        _ => return Err(format!("whiteSpace {v:?}")),
                    }
                }
                "simpleType" => {}
                other => return Err(format!("facet xsd:{other} is not supported")),
            }
        }
        if !patterns.is_empty() {
            facets.push(Facet::Patterns(patterns));
        }
        if !enumeration.is_empty() {
            let mut sorted: Vec<String> = enumeration
                .iter()
                .filter_map(|(_, v)| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            sorted.sort_unstable();
            facets.push(Facet::Enumeration(enumeration, sorted));
        }
        self.schema.simple.push(SimpleType::Atomic {
            builtin,
            whitespace,
            facets,
            name,
        });
        Ok(self.schema.simple.len() - 1)
    }

    fn complex_type(&mut self, node: &'a XNode, tns: &str) -> Result<ComplexId, String> {
        if node.attr("mixed").is_some_and(|m| m == "true") || node.attr("abstract").is_some() {
            return Err("mixed or abstract complex types are not supported".into());
        }
        let mut attributes = Vec::new();
        let mut particle = None;
        let mut simple = None;
        for child in node.xs_children() {
            match child.local.as_str() {
                "sequence" | "choice" => particle = Some(self.particle(child, tns)?),
                "attribute" => attributes.push(self.attribute(child)?),
                "complexContent" => {
                    let ext = child.xs_children().next().ok_or("empty complexContent")?;
                    if ext.local != "extension" {
                        return Err(format!("complexContent/{} is not supported", ext.local));
                    }
                    let base = match self.type_ref(&ext.resolve(ext.attr("base").ok_or("extension without base")?)?)? {
                        TypeRef::Complex(id) => id,
                        TypeRef::Simple(_) => return Err("complexContent extension of a simple type".into()),
                    };
                    let mut own = None;
                    for e in ext.xs_children() {
                        match e.local.as_str() {
                            "sequence" | "choice" => own = Some(self.particle(e, tns)?),
                            "attribute" => attributes.push(self.attribute(e)?),
                            other => return Err(format!("xsd:{other} in an extension is not supported")),
                        }
                    }
                    let base_ct = &self.schema.complex[base];
                    let base_particle = match &base_ct.content {
                        Content::Elements { particle, .. } => Some(clone_particle(particle)),
                        Content::Empty => None,
                        Content::Simple(_) => return Err("complexContent extension of simple content".into()),
                    };
                    let mut base_attrs: Vec<AttributeDecl> = base_ct
                        .attributes
                        .iter()
                        .map(|a| AttributeDecl {
                            name: a.name.clone(),
                            ty: a.ty,
                            required: a.required,
                            fixed: a.fixed.clone(),
                        })
                        .collect();
                    base_attrs.append(&mut attributes);
                    attributes = base_attrs;
                    particle = match (base_particle, own) {
                        (Some(b), Some(o)) => Some(Particle {
                            min: 1,
                            max: 1,
                            term: Term::Sequence(vec![b, o]),
                        }),
                        (b, o) => b.or(o),
                    };
                }
                "simpleContent" => {
                    let ext = child.xs_children().next().ok_or("empty simpleContent")?;
                    if ext.local != "extension" {
                        return Err(format!("simpleContent/{} is not supported", ext.local));
                    }
                    let base = match self.type_ref(&ext.resolve(ext.attr("base").ok_or("extension without base")?)?)? {
                        TypeRef::Simple(id) => id,
                        TypeRef::Complex(_) => return Err("simpleContent extension of a complex type is not supported".into()),
                    };
                    for e in ext.xs_children() {
                        match e.local.as_str() {
                            "attribute" => attributes.push(self.attribute(e)?),
                            other => return Err(format!("xsd:{other} in a simpleContent extension is not supported")),
                        }
                    }
                    simple = Some(base);
                }
                other => return Err(format!("xsd:{other} in a complexType is not supported")),
            }
        }
        let content = match (simple, particle) {
            (Some(s), _) => Content::Simple(s),
            (None, Some(mut particle)) => {
                let mut canonical = HashMap::new();
                self.collect_names(&particle, &mut canonical)?;
                canonicalize(&mut particle, &self.schema.elements, &canonical);
                let mut names = ElementNames::default();
                for (name, &id) in &canonical {
                    names.by_local.entry(name.local.clone()).or_default().push(id);
                    names.ids.push(id);
                }
                names.ids.sort_unstable();
                Content::Elements { particle, names }
            }
            (None, None) => Content::Empty,
        };
        self.schema.complex.push(ComplexType { attributes, content });
        Ok(self.schema.complex.len() - 1)
    }

    fn collect_names(&self, p: &Particle, names: &mut HashMap<QName, ElemId>) -> Result<(), String> {
        match &p.term {
            Term::Element(id) => {
                let decl = &self.schema.elements[*id];
                if let Some(&other) = names.get(&decl.name) {
                    // "Element Declarations Consistent": the same name must have the same type.
                    let same = match (self.schema.elements[other].ty, decl.ty) {
                        (TypeRef::Simple(a), TypeRef::Simple(b)) | (TypeRef::Complex(a), TypeRef::Complex(b)) => a == b,
                        _ => false,
                    };
                    if !same && !self.same_structure(self.schema.elements[other].ty, decl.ty) {
                        return Err(format!(
                            "element {} is declared twice with different types in one content model",
                            decl.name.local
                        ));
                    }
                }
                names.insert(decl.name.clone(), *id);
            }
            Term::Sequence(ps) | Term::Choice(ps) => {
                for p in ps {
                    self.collect_names(p, names)?;
                }
            }
        }
        Ok(())
    }

    /// Two anonymous types that are written identically (the schema repeats
    /// `AdresZamieszkania` blocks) count as the same type.
    fn same_structure(&self, a: TypeRef, b: TypeRef) -> bool {
        format!("{:?}", self.type_shape(a)) == format!("{:?}", self.type_shape(b))
    }

    fn type_shape(&self, t: TypeRef) -> String {
        match t {
            TypeRef::Simple(id) => format!("{:?}", self.schema.simple[id]),
            TypeRef::Complex(id) => format!("{:?}", self.schema.complex[id]),
        }
    }

    fn particle(&mut self, node: &'a XNode, tns: &str) -> Result<Particle, String> {
        let (min, max) = occurs(node)?;
        let term = match node.local.as_str() {
            "element" => Term::Element(self.element(node, tns)?),
            "sequence" | "choice" => {
                let mut parts = Vec::new();
                for c in node.xs_children() {
                    parts.push(self.particle(c, tns)?);
                }
                if node.local == "sequence" {
                    Term::Sequence(parts)
                } else {
                    Term::Choice(parts)
                }
            }
            other => return Err(format!("xsd:{other} particles are not supported")),
        };
        Ok(Particle { min, max, term })
    }

    fn attribute(&mut self, node: &'a XNode) -> Result<AttributeDecl, String> {
        // Attributes are unqualified (attributeFormDefault), so no target namespace here.
        let local = node
            .attr("name")
            .ok_or("attribute without a name (ref is not supported)")?
            .to_string();
        let ty = match node.attr("type") {
            Some(t) => self.named_simple_type(&node.resolve(t)?)?,
            None => match node.xs_children().find(|c| c.local == "simpleType") {
                Some(st) => self.simple_type(st, None)?,
                None => self.named_simple_type(&QName {
                    ns: XS.into(),
                    local: "string".into(),
                })?,
            },
        };
        if node.attr("default").is_some() || node.attr("form").is_some() {
            return Err(format!("attribute {local}: default/form are not supported"));
        }
        Ok(AttributeDecl {
            name: QName { ns: String::new(), local },
            ty,
            required: node.attr("use") == Some("required"),
            fixed: node.attr("fixed").map(str::to_string),
        })
    }
}

/// Points every element term at the one declaration kept for its name.
fn canonicalize(p: &mut Particle, elements: &[ElementDecl], canonical: &HashMap<QName, ElemId>) {
    match &mut p.term {
        Term::Element(id) => {
            if let Some(&c) = canonical.get(&elements[*id].name) {
                *id = c;
            }
        }
        Term::Sequence(ps) | Term::Choice(ps) => {
            for p in ps {
                canonicalize(p, elements, canonical);
            }
        }
    }
}

fn clone_particle(p: &Particle) -> Particle {
    Particle {
        min: p.min,
        max: p.max,
        term: match &p.term {
            Term::Element(id) => Term::Element(*id),
            Term::Sequence(ps) => Term::Sequence(ps.iter().map(clone_particle).collect()),
            Term::Choice(ps) => Term::Choice(ps.iter().map(clone_particle).collect()),
        },
    }
}

fn clone_facet(f: &Facet) -> Facet {
    match f {
        Facet::Length(n) => Facet::Length(*n),
        Facet::MinLength(n) => Facet::MinLength(*n),
        Facet::MaxLength(n) => Facet::MaxLength(*n),
        Facet::Patterns(p) => Facet::Patterns(p.clone()),
        Facet::Enumeration(e, s) => Facet::Enumeration(e.clone(), s.clone()),
        Facet::TotalDigits(n) => Facet::TotalDigits(*n),
        Facet::FractionDigits(n) => Facet::FractionDigits(*n),
        Facet::MinInclusive(v, s) => Facet::MinInclusive(v.clone(), s.clone()),
        Facet::MaxInclusive(v, s) => Facet::MaxInclusive(v.clone(), s.clone()),
        Facet::MinExclusive(v, s) => Facet::MinExclusive(v.clone(), s.clone()),
        Facet::MaxExclusive(v, s) => Facet::MaxExclusive(v.clone(), s.clone()),
    }
}

impl SimpleType {
    pub fn name(&self) -> Option<&str> {
        match self {
            SimpleType::Atomic { name, .. } | SimpleType::Union { name, .. } => name.as_deref(),
        }
    }
}

/// Why a value does not fit its simple type, in words for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueProblem {
    /// `value.pattern`, `value.enumeration`, `value.length`, ...
    pub code: &'static str,
    pub pl: String,
    pub en: String,
}

impl Schema {
    /// Checks a raw (not yet normalised) value against a simple type.
    pub fn check_value(&self, ty: SimpleId, raw: &str) -> Result<(), ValueProblem> {
        match &self.simple[ty] {
            SimpleType::Union { members, .. } => {
                let mut first = None;
                for &m in members {
                    match self.check_value(m, raw) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(first.unwrap_or(ValueProblem {
                    code: "value.union",
                    pl: "wartość nie pasuje do żadnego z dozwolonych typów".into(),
                    en: "the value fits none of the allowed types".into(),
                }))
            }
            SimpleType::Atomic {
                builtin,
                whitespace,
                facets,
                ..
            } => {
                // libxml2 (xmllint, lxml) refuses leading whitespace in a date or time whose type
                // has no pattern, although XSD collapses it away. We side with libxml2: such a
                // value is unintended anyway, and being equal to xmllint is the contract here.
                let temporal = matches!(builtin, Builtin::Date | Builtin::DateTime | Builtin::GYear);
                if temporal && raw.starts_with([' ', '\t', '\n', '\r']) && !facets.iter().any(|f| matches!(f, Facet::Patterns(_))) {
                    return Err(ValueProblem {
                        code: "value.lexical",
                        pl: format!(
                            "wartość {} zaczyna się od odstępu; data i godzina muszą zaczynać się od cyfry",
                            quote(raw.trim())
                        ),
                        en: format!(
                            "the value {} starts with whitespace; a date and time must start with a digit",
                            quote(raw.trim())
                        ),
                    });
                }
                let v = whitespace.apply(raw);
                // Strings are their own value: no copy; enumerations compare the text itself.
                let value = if builtin.is_stringy() {
                    Value::Str(String::new())
                } else {
                    builtin.parse(&v).map_err(|(pl, en)| ValueProblem {
                        code: "value.lexical",
                        pl: format!("wartość {} nie jest {pl}", quote(&v)),
                        en: format!("the value {} is not {en}", quote(&v)),
                    })?
                };
                let chars = std::cell::OnceCell::new();
                for f in facets {
                    check_facet(f, *builtin, &v, &value, &chars)?;
                }
                Ok(())
            }
        }
    }
}

fn quote(v: &str) -> String {
    let shown: String = v.chars().take(60).collect();
    if shown.len() < v.len() {
        format!("\"{shown}…\"")
    } else {
        format!("\"{shown}\"")
    }
}

fn check_facet(f: &Facet, builtin: Builtin, v: &str, value: &Value, count: &std::cell::OnceCell<usize>) -> Result<(), ValueProblem> {
    // Counted once per value, however many length facets it has.
    let chars = || *count.get_or_init(|| v.chars().count());
    fn digits(value: &Value) -> Option<&Decimal> {
        match value {
            Value::Num(d) => Some(d),
            _ => None,
        }
    }
    let fail = |code, pl: String, en: String| Err(ValueProblem { code, pl, en });
    match f {
        Facet::Length(n) if builtin.is_stringy() && chars() != *n => fail(
            "value.length",
            format!("wartość {} ma {} znaków, wymagane dokładnie {n}", quote(v), chars()),
            format!("the value {} has {} characters, exactly {n} required", quote(v), chars()),
        ),
        Facet::MinLength(n) if builtin.is_stringy() && chars() < *n => {
            if v.is_empty() {
                fail(
                    "value.empty",
                    "pole nie może być puste".into(),
                    "the field must not be empty".into(),
                )
            } else {
                fail(
                    "value.min_length",
                    format!("wartość {} jest za krótka: minimum {n} znaków", quote(v)),
                    format!("the value {} is too short: at least {n} characters", quote(v)),
                )
            }
        }
        Facet::MaxLength(n) if builtin.is_stringy() && chars() > *n => fail(
            "value.max_length",
            format!("wartość ma {} znaków, dozwolone najwyżej {n}", chars()),
            format!("the value has {} characters, at most {n} allowed", chars()),
        ),
        Facet::Patterns(ps) if !ps.iter().any(|(_, re)| re.is_match(v)) => {
            let shown: Vec<&str> = ps.iter().map(|(s, _)| s.as_str()).collect();
            fail(
                "value.pattern",
                format!("wartość {} ma niedozwolony format (wzorzec {})", quote(v), shown.join(" | ")),
                format!("the value {} has the wrong format (pattern {})", quote(v), shown.join(" | ")),
            )
        }
        Facet::Enumeration(values, sorted) => {
            // Enumerated strings were normalised when the schema was compiled. A string type's
            // values are all strings (and in `sorted`); other types' values are none.
            let hit = if builtin.is_stringy() {
                sorted.binary_search_by(|s| s.as_str().cmp(v)).is_ok()
            } else {
                values.iter().any(|(_, val)| match val {
                    Value::Str(_) => false,
                    a => a.compare(value) == Some(std::cmp::Ordering::Equal),
                })
            };
            if hit {
                return Ok(());
            }
            let mut list: Vec<&str> = values.iter().map(|(l, _)| l.as_str()).take(20).collect();
            if values.len() > 20 {
                list.push("…");
            }
            fail(
                "value.enumeration",
                format!("wartość {} jest niedozwolona; dozwolone: {}", quote(v), list.join(", ")),
                format!("the value {} is not allowed; allowed: {}", quote(v), list.join(", ")),
            )
        }
        Facet::TotalDigits(n) if digits(value).is_some_and(|d| d.total_digits() > *n) => fail(
            "value.total_digits",
            format!("liczba {} ma za dużo cyfr: najwyżej {n}", quote(v)),
            format!("the number {} has too many digits: at most {n}", quote(v)),
        ),
        Facet::FractionDigits(n) if digits(value).is_some_and(|d: &Decimal| d.fraction_digits() > *n) => fail(
            "value.fraction_digits",
            format!("liczba {} ma za dużo miejsc po przecinku: najwyżej {n}", quote(v)),
            format!("the number {} has too many decimal places: at most {n}", quote(v)),
        ),
        // An indeterminate order (a time without a timezone near the limit) fails, as in XSD.
        Facet::MinInclusive(lim, s) | Facet::MaxInclusive(lim, s) if value.compare(lim).is_none() => fail(
            "value.range",
            format!(
                "wartość {} nie ma strefy czasowej i leży w granicach 14 godzin od limitu {s}; dodaj strefę (np. Z)",
                quote(v)
            ),
            format!(
                "the value {} has no timezone and lies within 14 hours of the limit {s}; add a timezone (e.g. Z)",
                quote(v)
            ),
        ),
        Facet::MinInclusive(lim, s) if !matches!(value.compare(lim), Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)) => {
            fail(
                "value.range",
                format!("wartość {} jest mniejsza niż dozwolone minimum {s}", quote(v)),
                format!("the value {} is below the minimum {s}", quote(v)),
            )
        }
        Facet::MaxInclusive(lim, s) if !matches!(value.compare(lim), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)) => fail(
            "value.range",
            format!("wartość {} jest większa niż dozwolone maksimum {s}", quote(v)),
            format!("the value {} is above the maximum {s}", quote(v)),
        ),
        Facet::MinExclusive(lim, s) if value.compare(lim) != Some(std::cmp::Ordering::Greater) => fail(
            "value.range",
            format!("wartość {} musi być większa niż {s}", quote(v)),
            format!("the value {} must be greater than {s}", quote(v)),
        ),
        Facet::MaxExclusive(lim, s) if value.compare(lim) != Some(std::cmp::Ordering::Less) => fail(
            "value.range",
            format!("wartość {} musi być mniejsza niż {s}", quote(v)),
            format!("the value {} must be less than {s}", quote(v)),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fa(local: &str) -> QName {
        QName {
            ns: crate::FA3_NAMESPACE.into(),
            local: local.into(),
        }
    }

    #[test]
    fn the_bundled_schema_compiles_with_every_pattern() {
        let s = load().unwrap();
        assert!(s.globals.contains_key(&fa("Faktura")));
        let mut compiled: Vec<String> = s
            .simple
            .iter()
            .flat_map(|t| match t {
                SimpleType::Atomic { facets, .. } => facets
                    .iter()
                    .filter_map(|f| match f {
                        Facet::Patterns(p) => Some(p.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()),
                        _ => None,
                    })
                    .flatten()
                    .collect(),
                _ => vec![],
            })
            .collect();
        compiled.sort();
        compiled.dedup();
        let mut in_files: Vec<String> = [FA3_XSD, STRUKTURY_XSD, ELEMENTARNE_XSD, KODY_XSD]
            .iter()
            .flat_map(|t| {
                t.split("<xsd:pattern value=\"")
                    .skip(1)
                    .map(|r| r[..r.find('"').unwrap()].replace("&amp;", "&"))
            })
            .collect();
        in_files.sort();
        in_files.dedup();
        assert_eq!(compiled, in_files);
    }

    fn simple(s: &Schema, name: &str) -> SimpleId {
        s.simple
            .iter()
            .position(|t| t.name() == Some(name))
            .unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn facets_of_the_real_types() {
        let s = fa3();
        let kwota = simple(s, "TKwotowy");
        assert!(s.check_value(kwota, " 123.45 ").is_ok());
        assert!(s.check_value(kwota, "1.234").is_err());
        assert!(s.check_value(kwota, "01.23").is_err(), "the pattern forbids leading zeros");
        let data = simple(s, "TData");
        assert!(s.check_value(data, "2026-02-15").is_ok());
        assert_eq!(s.check_value(data, "2026-02-30").unwrap_err().code, "value.lexical");
        assert_eq!(s.check_value(data, "1899-12-31").unwrap_err().code, "value.range");
        assert_eq!(s.check_value(data, "2026-02-15Z").unwrap_err().code, "value.pattern");
        let regon = simple(s, "TNrREGON");
        assert!(s.check_value(regon, "123456789").is_ok() && s.check_value(regon, "12345678901234").is_ok());
        assert!(s.check_value(regon, "1234567890").is_err());
        let nip = simple(s, "TNrNIP");
        assert_eq!(s.check_value(nip, "0123456789").unwrap_err().code, "value.pattern");
        let czas = simple(s, "TDataCzas");
        assert!(s.check_value(czas, "2026-02-01T00:00:00Z \n").is_ok());
        assert!(s.check_value(czas, " 2026-02-01T00:00:00Z").is_err(), "as libxml2 does");
        assert!(
            s.check_value(data, " 2026-02-15 ").is_ok(),
            "with a pattern, libxml2 collapses first"
        );
        let wybor = simple(s, "TWybor1");
        assert!(s.check_value(wybor, "01").is_ok(), "enumeration compares in the value space");
        assert_eq!(s.check_value(wybor, "2").unwrap_err().code, "value.enumeration");
    }
}
