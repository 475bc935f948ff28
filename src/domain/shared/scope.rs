//! Scope lists: parsing the `scopes`/`scope` parameter and subset checks.

use std::sync::Arc;

use super::error::Refusal;

/// A list of distinct scope names in a stable order, shared between tokens of one grant.
pub type ScopeList = Arc<[Box<str>]>;

/// Most scopes one request may name.
pub const SCOPES_PER_REQUEST_MAX: usize = 64;
/// Longest scope name.
pub const SCOPE_LEN_MAX: usize = 128;

/// Parses a scope parameter separated by commas, commas and spaces, or spaces. Duplicates are
/// folded. Each name must use RFC 6749 section 3.3 characters (%x21 / %x23-5B / %x5D-7E).
pub fn parse_scopes(text: &str) -> Result<Vec<Box<str>>, Refusal> {
    let mut scopes: Vec<Box<str>> = Vec::new();
    for name in text.split([',', ' ']).filter(|s| !s.is_empty()) {
        if !is_valid_scope(name) {
            return Err(Refusal::InvalidScope);
        }
        if !scopes.iter().any(|s| &**s == name) {
            if scopes.len() == SCOPES_PER_REQUEST_MAX {
                return Err(Refusal::InvalidScope);
            }
            scopes.push(name.into());
        }
    }
    Ok(scopes)
}

pub fn is_valid_scope(name: &str) -> bool {
    (1..=SCOPE_LEN_MAX).contains(&name.len())
        && name.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// True when every name in `requested` is in `allowed`.
pub fn is_subset(requested: &[Box<str>], allowed: &[Box<str>]) -> bool {
    requested.iter().all(|r| allowed.iter().any(|a| a == r))
}

/// The scopes to grant: all of `allowed` when nothing was requested, else the requested ones,
/// which must all be allowed.
pub fn grant(requested: Option<Vec<Box<str>>>, allowed: &ScopeList) -> Result<ScopeList, Refusal> {
    match requested {
        None => Ok(allowed.clone()),
        Some(requested) if requested.is_empty() => Ok(allowed.clone()),
        Some(requested) if is_subset(&requested, allowed) => {
            if requested.len() == allowed.len() && requested.iter().zip(allowed.iter()).all(|(a, b)| a == b) {
                Ok(allowed.clone())
            } else {
                Ok(requested.into())
            }
        }
        Some(_) => Err(Refusal::InvalidScope),
    }
}

/// Space-separated, as RFC 6749 returns `scope`.
pub fn join(scopes: &[Box<str>]) -> String {
    scopes.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Box<str>]) -> Vec<&str> {
        list.iter().map(|s| &**s).collect()
    }

    #[test]
    fn separators_are_commas_spaces_or_both() {
        for text in ["a:read,b:write", "a:read, b:write", "a:read b:write", " a:read ,, b:write "] {
            assert_eq!(names(&parse_scopes(text).unwrap()), ["a:read", "b:write"], "{text:?}");
        }
        assert_eq!(names(&parse_scopes("a,a, a").unwrap()), ["a"]);
        assert!(parse_scopes("").unwrap().is_empty());
    }

    #[test]
    fn rejects_characters_outside_rfc6749() {
        for text in ["a\"b", "a\\b", "a\tb", "é", "a\nb"] {
            assert_eq!(parse_scopes(text), Err(Refusal::InvalidScope), "{text:?}");
        }
        let too_many: Vec<String> = (0..=SCOPES_PER_REQUEST_MAX).map(|i| format!("s{i}")).collect();
        assert_eq!(parse_scopes(&too_many.join(",")), Err(Refusal::InvalidScope));
        assert_eq!(parse_scopes(&"x".repeat(SCOPE_LEN_MAX + 1)), Err(Refusal::InvalidScope));
    }

    #[test]
    fn grant_defaults_to_everything_allowed_and_refuses_the_rest() {
        let allowed: ScopeList = vec!["a".into(), "b".into()].into();
        assert!(Arc::ptr_eq(&grant(None, &allowed).unwrap(), &allowed));
        assert_eq!(names(&grant(Some(vec!["b".into()]), &allowed).unwrap()), ["b"]);
        assert_eq!(grant(Some(vec!["c".into()]), &allowed), Err(Refusal::InvalidScope));
    }
}
