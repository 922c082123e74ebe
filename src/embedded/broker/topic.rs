//! Topic names and filters (MQTT 3.1.1 §4.7): what may be published to, what may be subscribed
//! to, and whether a name matches a filter.

/// True when `topic` may be published to: not empty, no wildcards, no NUL.
pub(super) fn valid_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// The group and the filter of a shared subscription, `$share/{group}/{filter}`; `None` for a
/// plain filter.
pub(super) fn shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix("$share/")?.split_once('/')
}

/// True when `filter` may be subscribed to: not empty, no NUL, `+` only as a whole level and `#`
/// only as the whole last level; a shared subscription's group is not empty and has no
/// wildcard, and its filter is valid.
pub(super) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    if filter.starts_with("$share/") || filter == "$share" {
        return match shared(filter) {
            Some((group, rest)) => {
                !group.is_empty() && !group.contains(['+', '#']) && valid_filter(rest)
            }
            None => false,
        };
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// True when a filter has wildcards (and so cannot be looked up by name).
pub(super) fn has_wildcards(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// True when the topic name `topic` matches `filter` (both already valid). Names starting with
/// `$` are not matched by a filter starting with a wildcard.
pub(super) fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = topic.split('/');
    for level in filter.split('/') {
        if level == "#" {
            return true;
        }
        match names.next() {
            Some(name) if level == "+" || level == name => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_specification() {
        for good in [
            "a", "a/b", "+", "#", "+/+", "a/+/c", "a/#", "/", "a//b", "+/#", "é/ü",
        ] {
            assert!(valid_filter(good), "{good}");
        }
        assert!(valid_filter("$share/stsgate/thing/product/+/requests"));
        assert_eq!(
            shared("$share/stsgate/thing/product/+/requests"),
            Some(("stsgate", "thing/product/+/requests"))
        );
        assert_eq!(shared("thing/product/+/requests"), None);
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+/b",
            "a/b+",
            "##",
            "a/#b",
            "a\0b",
            "$share",
            "$share/g",
            "$share//a",
            "$share/+/a",
            "$share/g/a+",
        ] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn names_have_no_wildcards() {
        assert!(valid_name("thing/product/SN1/requests"));
        assert!(valid_name("é"));
        for bad in ["", "a/+", "a/#", "a\0"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_specification() {
        let cases = [
            (
                "thing/product/SN1/requests",
                "thing/product/+/requests",
                true,
            ),
            (
                "thing/product/SN1/requests_reply",
                "thing/product/+/requests",
                false,
            ),
            (
                "thing/product/SN1/requests",
                "thing/product/SN1/requests",
                true,
            ),
            ("thing/product/SN1/requests", "thing/#", true),
            ("thing", "thing/#", true),
            ("thing/product", "thing/+", true),
            ("thing/product/x", "thing/+", false),
            ("thing", "thing/+", false),
            ("a/b", "#", true),
            ("/a", "+/a", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "+/x", false),
            ("$SYS/x", "$SYS/#", true),
            ("é/x", "+/x", true),
            ("a/b/c", "a/b", false),
        ];
        for (topic, filter, expected) in cases {
            assert_eq!(matches(topic, filter), expected, "{topic} vs {filter}");
        }
    }
}
