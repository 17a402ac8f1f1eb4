//! The invoice XML against `schema/EInvoice.xsd`, read at first use: element names, order and
//! counts (`sequence`, `minOccurs`, `maxOccurs`), required attributes, and leaf text by its
//! simple type (`pattern`, `enumeration`, `minLength`, `maxLength`, base64). That is every
//! construct the schema uses; anything else in it is refused when it is read, so the schema
//! cannot grow a rule this checker silently skips.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use roxmltree::{Document, Node};

const XSD: &str = include_str!("../../schema/EInvoice.xsd");

/// The schema, as [`validate`] uses it.
static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| Schema::parse(XSD));

#[derive(Debug)]
struct Schema {
    root: Element,
}

#[derive(Debug, Clone)]
struct Element {
    name: String,
    min: usize,
    max: usize,
    content: Content,
}

#[derive(Debug, Clone)]
enum Content {
    /// Text of a simple type.
    Simple(SimpleType),
    /// Child elements in sequence, and attributes (name, required).
    Complex {
        sequence: Vec<Element>,
        attributes: Vec<(String, bool)>,
    },
}

#[derive(Debug, Clone, Default)]
struct SimpleType {
    base64: bool,
    patterns: Vec<Regex>,
    enumeration: Vec<String>,
    min_length: Option<usize>,
    max_length: Option<usize>,
}

fn xs<'a>(n: Node<'a, 'a>, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

fn children<'a>(n: Node<'a, 'a>) -> impl Iterator<Item = Node<'a, 'a>> {
    n.children().filter(Node::is_element)
}

impl Schema {
    fn parse(text: &str) -> Result<Self, String> {
        let doc = Document::parse(text).map_err(|e| format!("schema: {e}"))?;
        let top = doc.root_element();
        let mut simple = HashMap::new();
        let mut complex = HashMap::new();
        for n in children(top) {
            let name = n.attribute("name").unwrap_or_default().to_owned();
            if xs(n, "simpleType") {
                simple.insert(name, n);
            } else if xs(n, "complexType") {
                complex.insert(name, n);
            }
        }
        let named = Named { simple, complex };
        let root = children(top)
            .find(|n| xs(*n, "element"))
            .ok_or("schema: no root element")?;
        Ok(Self {
            root: named.element(root)?,
        })
    }
}

struct Named<'a> {
    simple: HashMap<String, Node<'a, 'a>>,
    complex: HashMap<String, Node<'a, 'a>>,
}

impl<'a> Named<'a> {
    fn element(&self, n: Node<'a, 'a>) -> Result<Element, String> {
        let name = n
            .attribute("name")
            .ok_or("schema: element without a name")?;
        let count = |a: &str, default: usize| -> Result<usize, String> {
            match n.attribute(a) {
                None => Ok(default),
                Some("unbounded") => Ok(usize::MAX),
                Some(v) => v.parse().map_err(|_| format!("schema: {name} {a}={v}")),
            }
        };
        let content = if let Some(t) = n.attribute("type") {
            self.by_type(t)?
        } else if let Some(c) = children(n).find(|c| xs(*c, "complexType")) {
            self.complex(c)?
        } else if let Some(s) = children(n).find(|c| xs(*c, "simpleType")) {
            Content::Simple(simple_type(s)?)
        } else {
            Content::Simple(SimpleType::default())
        };
        Ok(Element {
            name: name.to_owned(),
            min: count("minOccurs", 1)?,
            max: count("maxOccurs", 1)?,
            content,
        })
    }

    fn by_type(&self, t: &str) -> Result<Content, String> {
        match t {
            "xs:string" => Ok(Content::Simple(SimpleType::default())),
            "xs:base64Binary" => Ok(Content::Simple(SimpleType {
                base64: true,
                ..SimpleType::default()
            })),
            _ => {
                if let Some(s) = self.simple.get(t) {
                    Ok(Content::Simple(simple_type(*s)?))
                } else if let Some(c) = self.complex.get(t) {
                    self.complex(*c)
                } else {
                    Err(format!("schema: unknown type {t}"))
                }
            }
        }
    }

    fn complex(&self, c: Node<'a, 'a>) -> Result<Content, String> {
        let mut sequence = Vec::new();
        let mut attributes = Vec::new();
        for part in children(c) {
            if xs(part, "sequence") {
                for e in children(part) {
                    if !xs(e, "element") {
                        return Err(format!("schema: {} in a sequence", e.tag_name().name()));
                    }
                    sequence.push(self.element(e)?);
                }
            } else if xs(part, "attribute") {
                let name = part
                    .attribute("name")
                    .ok_or("schema: attribute without a name")?;
                attributes.push((name.to_owned(), part.attribute("use") == Some("required")));
            } else {
                return Err(format!(
                    "schema: {} in a complexType",
                    part.tag_name().name()
                ));
            }
        }
        Ok(Content::Complex {
            sequence,
            attributes,
        })
    }
}

fn simple_type(s: Node<'_, '_>) -> Result<SimpleType, String> {
    let r = children(s)
        .find(|c| xs(*c, "restriction"))
        .ok_or("schema: simpleType without a restriction")?;
    let mut t = SimpleType {
        base64: r.attribute("base") == Some("xs:base64Binary"),
        ..SimpleType::default()
    };
    for facet in children(r) {
        let v = facet.attribute("value").unwrap_or_default();
        match facet.tag_name().name() {
            // XSD patterns match the whole value.
            "pattern" => t.patterns.push(
                Regex::new(&format!("^(?:{v})$"))
                    .map_err(|e| format!("schema: pattern {v}: {e}"))?,
            ),
            "enumeration" => t.enumeration.push(v.to_owned()),
            "minLength" => t.min_length = v.parse().ok(),
            "maxLength" => t.max_length = v.parse().ok(),
            other => return Err(format!("schema: facet {other}")),
        }
    }
    Ok(t)
}

/// Checks `doc` against the schema; the first problem, with the element's path.
pub(super) fn validate(doc: &Document<'_>) -> Result<(), String> {
    let schema = SCHEMA.as_ref().map_err(Clone::clone)?;
    let root = doc.root_element();
    if root.tag_name().name() != schema.root.name || root.tag_name().namespace().is_some() {
        return Err(format!(
            "the root element is {}, not {}",
            root.tag_name().name(),
            schema.root.name
        ));
    }
    check(root, &schema.root, &schema.root.name)
}

fn check(n: Node<'_, '_>, decl: &Element, path: &str) -> Result<(), String> {
    match &decl.content {
        Content::Simple(t) => {
            if let Some(c) = children(n).next() {
                return Err(format!(
                    "{path}: element {} inside text",
                    c.tag_name().name()
                ));
            }
            if n.attributes().len() > 0 {
                return Err(format!("{path}: attributes are not allowed here"));
            }
            let text: String = n.children().filter_map(|c| c.text()).collect();
            text_ok(&text, t).map_err(|why| format!("{path}: {why}"))
        }
        Content::Complex {
            sequence,
            attributes,
        } => {
            for a in n.attributes() {
                if a.namespace().is_some() || !attributes.iter().any(|(name, _)| name == a.name()) {
                    return Err(format!("{path}: attribute {} is not allowed", a.name()));
                }
            }
            for (name, required) in attributes {
                if *required && n.attribute(name.as_str()).is_none() {
                    return Err(format!("{path}: attribute {name} is required"));
                }
            }
            if n.children()
                .any(|c| c.is_text() && !c.text().unwrap_or_default().trim().is_empty())
            {
                return Err(format!("{path}: text between elements"));
            }
            let kids: Vec<Node<'_, '_>> = children(n).collect();
            let mut i = 0;
            for d in sequence {
                let mut count = 0;
                while i < kids.len() && kids[i].tag_name().name() == d.name {
                    if kids[i].tag_name().namespace().is_some() {
                        return Err(format!("{path}/{}: namespaced element", d.name));
                    }
                    count += 1;
                    if count > d.max {
                        return Err(format!(
                            "{path}/{}: more than {} (a second {} is not allowed)",
                            d.name, d.max, d.name
                        ));
                    }
                    check(kids[i], d, &format!("{path}/{}", d.name))?;
                    i += 1;
                }
                if count < d.min {
                    return Err(format!("{path}/{}: missing", d.name));
                }
            }
            if let Some(extra) = kids.get(i) {
                return Err(format!(
                    "{path}: element {} is not allowed here (unknown, out of order or repeated)",
                    extra.tag_name().name()
                ));
            }
            Ok(())
        }
    }
}

fn text_ok(text: &str, t: &SimpleType) -> Result<(), String> {
    let chars = text.chars().count();
    if t.min_length.is_some_and(|m| chars < m) || t.max_length.is_some_and(|m| chars > m) {
        return Err(format!("{chars} characters, outside the allowed length"));
    }
    if !t.patterns.is_empty() && !t.patterns.iter().any(|p| p.is_match(text)) {
        return Err("not of the required form".into());
    }
    if !t.enumeration.is_empty() && !t.enumeration.iter().any(|v| v == text) {
        return Err(format!("not one of {}", t.enumeration.join(", ")));
    }
    if t.base64 && super::unbase64(text).is_none() {
        return Err("not base64".into());
    }
    Ok(())
}
