//! OpenWhisk's rule for entity names (namespaces, triggers), in one place for every name.

use super::Problems;

/// The rule as an error message says it.
const RULE: &str = "ASCII letters, digits and _, then also space, @, ., & and -, \
                    not ending in a space, at most 256 characters";

/// OpenWhisk's entity-name rule (`EntityPath.scala`, `\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\z`
/// with Java's ASCII `\w`): a word character, then up to 255 of word characters, space,
/// `@`, `.`, `&` and `-`, the last not a space. A name OpenWhisk would answer 400 for
/// is refused at start instead.
fn valid_entity_name(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let inner = |b: u8| word(b) || matches!(b, b' ' | b'@' | b'.' | b'&' | b'-');
    match name.as_bytes() {
        [] => false,
        [only] => word(*only),
        [first, middle @ .., last] => {
            name.len() <= 256
                && word(*first)
                && middle.iter().all(|&b| inner(b))
                && inner(*last)
                && *last != b' '
        }
    }
}

/// Records a problem on `variable` unless `name` is a valid OpenWhisk name for `what`
/// (a trigger, a namespace).
pub(super) fn check_entity_name(problems: &mut Problems, variable: &str, name: &str, what: &str) {
    if !valid_entity_name(name) {
        let shown = match name.chars().count() {
            0..=64 => format!("{name:?}"),
            n => format!("a name of {n} characters"),
        };
        problems.push(
            variable,
            &format!("{shown} is not a valid OpenWhisk {what} name: {RULE}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_names_follow_openwhisk_rules() {
        let longest = "x".repeat(256);
        for ok in [
            "a",
            "_",
            "9",
            "addReadingToDbTrigger",
            "my trigger@dc1.x&y-z",
            "a-",
            "a@",
            &longest,
        ] {
            assert!(valid_entity_name(ok), "{ok}");
        }
        let too_long = "x".repeat(257);
        for bad in [
            "",
            " lead",
            "trail ",
            " ",
            "-x",
            "@x",
            "a/b",
            "a#b",
            "a\tb",
            "ä",
            "aé",
            "guest²",
            "t\u{0661}",
            "x\u{212A}",
            &too_long,
        ] {
            assert!(!valid_entity_name(bad), "{bad}");
        }
    }
}
