//! OpenWhisk's rule for entity names (namespaces, triggers), in one place for every name.

/// OpenWhisk's entity-name rule (`EntityPath.scala`): word characters, then also
/// space, `@`, `.`, `&` and `-`; no trailing space; at most 256 characters.
pub(crate) fn valid_entity_name(name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let inner = |c: char| word(c) || matches!(c, '@' | ' ' | '.' | '&' | '-');
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    word(first) && name.chars().count() <= 256 && chars.all(inner) && !name.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_follow_openwhisk_rules() {
        for ok in ["a", "addReadingToDbTrigger", "my trigger@dc1.x&y-z", "_"] {
            assert!(valid_entity_name(ok), "{ok}");
        }
        for bad in ["", " lead", "trail ", "-x", "a/b", "a#b", &"x".repeat(257)] {
            assert!(!valid_entity_name(bad), "{bad}");
        }
    }
}
