//! Translation of XSD `pattern` regular expressions into the `regex` crate's syntax.
//!
//! XSD patterns differ from Perl-style ones: they always match the whole value (implicit
//! anchors), `^` and `$` are ordinary characters, `.` excludes only `\n` and `\r`, `\s` is
//! exactly space, tab, CR and LF, and `\i`/`\c` and class subtraction `[a-z-[aeiou]]` exist.
//! Everything the FA(3) schemas use is translated; anything else is refused loudly rather than
//! guessed, so a new schema version cannot silently be checked with a different pattern.

use regex::Regex;

const XSD_SPACE: &str = r" \t\n\r";

/// Compiles an XSD pattern into an anchored Rust regex.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let translated = translate(pattern)?;
    Regex::new(&format!(r"\A(?:{translated})\z")).map_err(|e| format!("pattern {pattern:?}: {e}"))
}

fn translate(p: &str) -> Result<String, String> {
    let mut out = String::with_capacity(p.len() + 16);
    let mut chars = p.chars().peekable();
    let mut in_class = false;
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_class_start = class_start;
        class_start = false;
        match c {
            '\\' => {
                let e = chars.next().ok_or_else(|| format!("pattern {p:?} ends with a backslash"))?;
                match (e, in_class) {
                    ('s', false) => out.push_str(&format!("[{XSD_SPACE}]")),
                    ('S', false) => out.push_str(&format!("[^{XSD_SPACE}]")),
                    ('s', true) => out.push_str(XSD_SPACE),
                    ('d', _) => out.push_str(r"\p{Nd}"),
                    ('D', false) => out.push_str(r"\P{Nd}"),
                    ('p' | 'P', _) => {
                        // \p{..}: Unicode categories and blocks; the category names agree.
                        out.push('\\');
                        out.push(e);
                        for n in chars.by_ref() {
                            out.push(n);
                            if n == '}' {
                                break;
                            }
                        }
                    }
                    ('n' | 'r' | 't', _) => {
                        out.push('\\');
                        out.push(e);
                    }
                    (e, _) if "\\|.-^?*+{}()[]".contains(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    (e, _) => return Err(format!("pattern {p:?}: escape \\{e} is not supported by this validator")),
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
            }
            '[' => {
                return Err(format!(
                    "pattern {p:?}: character class subtraction is not supported by this validator"
                ))
            }
            ']' if in_class && !at_class_start => {
                in_class = false;
                out.push(']');
            }
            '-' if in_class && chars.peek() == Some(&'[') => {
                return Err(format!(
                    "pattern {p:?}: character class subtraction is not supported by this validator"
                ))
            }
            '.' if !in_class => out.push_str(r"[^\n\r]"),
            '^' | '$' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            // Characters the regex crate gives a meaning inside classes (set operations, nesting).
            '&' | '~' | '^' if in_class => {
                out.push('\\');
                out.push(c);
            }
            '-' if in_class && chars.peek() == Some(&'-') => return Err(format!("pattern {p:?}: '--' inside a class")),
            c => out.push(c),
        }
    }
    if in_class {
        return Err(format!("pattern {p:?}: unclosed character class"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p).unwrap().is_match(s)
    }

    #[test]
    fn xsd_patterns_match_the_whole_value() {
        assert!(m(r"\d{10}", "1234567890"));
        assert!(!m(r"\d{10}", "12345678901"));
        assert!(!m(r"\d{10}", "x1234567890"));
        assert!(m("P[A-KM-Z]", "PA") && !m("P[A-KM-Z]", "PL"));
        assert!(m("[A-OQ-Z][A-Z]", "DE") && !m("[A-OQ-Z][A-Z]", "PL"));
    }

    #[test]
    fn dot_and_space_classes_follow_xsd() {
        assert!(m("(.)+@(.)+", "a@b"));
        assert!(!m("(.)+@(.)+", "a\r@b"));
        assert!(!m("(.)+@(.)+", "a\n@b"));
        assert!(m("(.)+@(.)+", "a\u{85}@b"));
        assert!(m(r"(/[^\s?#]*)?", "/a\u{a0}b"));
        assert!(!m(r"(/[^\s?#]*)?", "/a b"));
        assert!(m("a^b$", "a^b$"));
    }

    #[test]
    fn unsupported_constructs_are_refused_not_guessed() {
        assert!(compile("[a-z-[aeiou]]").is_err());
        assert!(compile(r"\i\c*").is_err());
        assert!(compile("[abc").is_err());
    }
}
