//! Values keyed by MQTT topic filter, and every filter matching a topic found by walking
//! the topic's levels once: the cost of a match grows with the topic's levels and with
//! the `+`/`#` branches on its path, not with the number of filters held.
//!
//! Matching follows MQTT 3.1.1 / 5 section 4.7: levels are split on `/` and may be empty
//! (`a//b`, `/a`); `+` matches exactly one level, possibly empty; `#` (always the last
//! level) matches its parent level and any number of child levels, so `a/#` matches
//! `a`, `a/` and `a/b/c`; a topic starting with `$` is not matched by a filter whose
//! first level is `+` or `#`, but is by explicit filters such as `$SYS/#`.
//!
//! `rumqttc::matches` (0.25.1) differs on `$`: it matches no filter at all to a topic
//! starting with `$`, not even `$SYS/#` or `$SYS/x`; and it panics on a topic whose first
//! character is not ASCII (it slices `topic[..1]`). The tests compare against
//! `rumqttc::matches` only where it follows the spec.
//!
//! Nothing recurses (a match and a drop keep an explicit stack; insert, lookup and remove
//! follow one path), so a legal 65,535-byte filter or topic of empty levels cannot
//! overflow a thread's stack.
//!
//! **Memory.** On a 64-bit target a `Node` is 88 bytes plus `size_of::<V>() - 8` (the
//! test `sizes_the_memory_estimate_relies_on` pins the sizes used here), each in its own
//! `Box`. A filter of the shape `dc1/sensors/<id>/temp`, beside thousands of others that
//! share `dc1/sensors`, with an 8-byte `V` (a prometheus `Counter` is one `Arc`; what it
//! points to is not counted) costs about 450 bytes in glibc's chunks (at least 32 bytes,
//! in steps of 16, 8 of them overhead):
//! - its bucket in the `sensors` node's map: 24 bytes and a control byte, at a load of
//!   7/16 to 7/8, so 27 to 55 bytes;
//! - the `<id>` node (96), its one-entry map (4 buckets of 24 bytes plus 20 control
//!   bytes: 128) and its key (32);
//! - the `temp` node (96) and its key (32);
//! - the filter itself, kept once for the callback (32 for up to 24 bytes).
//!
//! A counting allocator (outside the tests, which have no `unsafe`) agreed: for 1,000 to
//! 100,000 such filters, 355 to 370 bytes requested per filter, 448 to 467 in chunks.
//! Removing a filter frees its nodes, and a map that falls to a quarter of its capacity
//! is shrunk, so a busy level returns memory after a wave of unregistrations too.

use std::collections::HashMap;
use std::fmt;

/// Values keyed by MQTT topic filter; finds every filter matching a topic by walking its
/// levels.
pub struct FilterTrie<V> {
    /// Holds the filters' first levels; never pruned.
    root: Node<V>,
    /// The number of filters held.
    len: usize,
}

/// The filters that share one path of levels. Its depth in the trie is the number of
/// levels on the path, so a walk reaches it at most once per topic.
struct Node<V> {
    /// The next level, literal (including a `#` that is not last, which only a topic with
    /// a `#` level, itself invalid, can reach).
    children: HashMap<Box<str>, Box<Node<V>>>,
    /// The next level when it is `+`.
    plus: Option<Box<Node<V>>>,
    /// The filter that is this path followed by `#`: a `#` ends its filter, so it needs
    /// no node of its own.
    hash: Option<Box<Entry<V>>>,
    /// The filter that is exactly this path.
    value: Option<Entry<V>>,
}

/// One filter's value, with the filter kept so a match can name it without allocating.
struct Entry<V> {
    filter: Box<str>,
    value: V,
}

/// Which slot of the node at the end of a filter's path holds the filter.
#[derive(Clone, Copy)]
enum Slot {
    /// The filter is the path itself.
    Value,
    /// The filter is the path followed by `#`.
    Hash,
}

/// Levels still to walk: `None` for none left, `Some(s)` for the levels of `s` (so
/// `Some("")` is one empty level). A filter `#` has no levels before its `#`, while `/#`
/// has one empty one; a plain `&str` cannot tell those apart.
type Rest<'a> = Option<&'a str>;

/// The first of the levels in `rest`, and the rest after it.
fn next_level(rest: &str) -> (&str, Rest<'_>) {
    match rest.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (rest, None),
    }
}

fn levels(rest: Rest<'_>) -> impl Iterator<Item = &str> {
    rest.into_iter().flat_map(|rest| rest.split('/'))
}

/// The path of `filter` (its levels before a last `#`) and the slot holding it there.
fn parse(filter: &str) -> (Rest<'_>, Slot) {
    if filter == "#" {
        (None, Slot::Hash)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), Slot::Hash)
    } else {
        (Some(filter), Slot::Value)
    }
}

impl<V> Default for FilterTrie<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            hash: None,
            value: None,
        }
    }
}

impl<V> Node<V> {
    fn child(&self, level: &str) -> Option<&Node<V>> {
        match level {
            "+" => self.plus.as_deref(),
            _ => self.children.get(level).map(|child| &**child),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            _ => self.children.get_mut(level).map(|child| &mut **child),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<V> {
        if level == "+" {
            return self.plus.get_or_insert_with(Box::default);
        }
        // `entry` would allocate the key even when the child exists.
        if !self.children.contains_key(level) {
            self.children.insert(level.into(), Box::default());
        }
        self.children.get_mut(level).expect("inserted above")
    }

    fn remove_child(&mut self, level: &str) -> Option<Box<Node<V>>> {
        if level == "+" {
            return self.plus.take();
        }
        let child = self.children.remove(level);
        // A map never shrinks by itself. Shrinking to twice its length, and only once it
        // is below a quarter of its capacity, keeps the cost amortised O(1) per removal.
        if self.children.capacity() > 16 && self.children.len() < self.children.capacity() / 4 {
            self.children.shrink_to(self.children.len() * 2);
        }
        child
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn holds_a_filter(&self) -> bool {
        self.value.is_some() || self.hash.is_some()
    }

    fn entry(&self, slot: Slot) -> Option<&Entry<V>> {
        match slot {
            Slot::Value => self.value.as_ref(),
            Slot::Hash => self.hash.as_deref(),
        }
    }

    fn entry_mut(&mut self, slot: Slot) -> Option<&mut Entry<V>> {
        match slot {
            Slot::Value => self.value.as_mut(),
            Slot::Hash => self.hash.as_deref_mut(),
        }
    }

    fn take_entry(&mut self, slot: Slot) -> Option<Entry<V>> {
        match slot {
            Slot::Value => self.value.take(),
            Slot::Hash => self.hash.take().map(|entry| *entry),
        }
    }

    /// Reports this node's filters that match the levels in `rest` (those after this
    /// node's path) and pushes the children that may hold more. `wildcards` is false only
    /// at the root for a `$` topic.
    fn visit<'n, 't>(
        &'n self,
        rest: Rest<'t>,
        wildcards: bool,
        stack: &mut Stack<(&'n Node<V>, Rest<'t>)>,
        f: &mut impl FnMut(&str, &V),
    ) {
        if wildcards && let Some(entry) = &self.hash {
            f(&entry.filter, &entry.value);
        }
        let Some(rest) = rest else {
            if let Some(entry) = &self.value {
                f(&entry.filter, &entry.value);
            }
            return;
        };
        let (level, rest) = next_level(rest);
        if wildcards && let Some(plus) = &self.plus {
            stack.push((plus, rest));
        }
        if let Some(child) = self.children.get(level) {
            stack.push((child, rest));
        }
    }

    /// Moves out every child, so that dropping this node cannot recurse.
    fn take_children(&mut self, into: &mut Vec<Box<Node<V>>>) {
        into.extend(self.children.drain().map(|(_, child)| child));
        into.extend(self.plus.take());
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree one node at a time: the default drop would recurse once per
    /// level, and a filter may have 65,536 of them.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut orphans = Vec::new();
        self.take_children(&mut orphans);
        while let Some(mut node) = orphans.pop() {
            node.take_children(&mut orphans);
        }
    }
}

impl<V> FilterTrie<V> {
    /// The value of `filter`, inserted with `make()` when absent.
    pub fn entry_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        let (path, slot) = parse(filter);
        let mut node = &mut self.root;
        for level in levels(path) {
            node = node.child_or_insert(level);
        }
        let new = |filter: &str| Entry {
            filter: filter.into(),
            value: make(),
        };
        let absent = node.entry(slot).is_none();
        self.len += usize::from(absent);
        let entry = match slot {
            Slot::Value => node.value.get_or_insert_with(|| new(filter)),
            Slot::Hash => node.hash.get_or_insert_with(|| Box::new(new(filter))),
        };
        &mut entry.value
    }

    /// The value of exactly `filter` (a lookup, not a match: `a/+` is not `a/b`).
    #[cfg(test)]
    pub fn get(&self, filter: &str) -> Option<&V> {
        let (path, slot) = parse(filter);
        let mut node = &self.root;
        for level in levels(path) {
            node = node.child(level)?;
        }
        node.entry(slot).map(|entry| &entry.value)
    }

    /// The value of exactly `filter`, to change.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let (path, slot) = parse(filter);
        let mut node = &mut self.root;
        for level in levels(path) {
            node = node.child_mut(level)?;
        }
        node.entry_mut(slot).map(|entry| &mut entry.value)
    }

    /// Removes `filter`'s value, pruning nodes left empty (so memory returns after many
    /// register/unregister cycles).
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        let (path, slot) = parse(filter);
        let mut node = &mut self.root;
        for level in levels(path) {
            node = node.child_mut(level)?;
        }
        let entry = node.take_entry(slot)?;
        self.len -= 1;
        if node.holds_a_filter() || node.child_count() > 0 {
            return Some(entry.value);
        }
        // The path's end is empty now, and so is every node above it up to the deepest
        // one that holds something besides the path: cut the path below that one.
        let mut node = &self.root;
        let mut cut = 0;
        for (depth, level) in levels(path).enumerate() {
            if node.holds_a_filter() || node.child_count() > 1 {
                cut = depth;
            }
            node = node.child(level).expect("the path was walked above");
        }
        let mut node = &mut self.root;
        let mut path_levels = levels(path);
        for level in path_levels.by_ref().take(cut) {
            node = node.child_mut(level).expect("the path was walked above");
        }
        if let Some(level) = path_levels.next() {
            node.remove_child(level);
        }
        Some(entry.value)
    }

    /// Calls `f` with every (filter, value) whose filter matches `topic`, each once.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &V)) {
        let mut stack = Stack::default();
        self.root
            .visit(Some(topic), !topic.starts_with('$'), &mut stack, &mut f);
        while let Some((node, rest)) = stack.pop() {
            node.visit(rest, true, &mut stack, &mut f);
        }
    }

    /// The number of filters held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every filter held (order unspecified), for resubscribing.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|entry| &*entry.filter)
    }

    fn entries(&self) -> impl Iterator<Item = &Entry<V>> {
        self.nodes()
            .flat_map(|node| node.value.iter().chain(node.hash.as_deref()))
    }

    /// Every node, the root first.
    fn nodes(&self) -> impl Iterator<Item = &Node<V>> {
        let mut stack = vec![&self.root];
        std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.values().map(|child| &**child));
            stack.extend(node.plus.as_deref());
            Some(node)
        })
    }

    /// The number of nodes besides the root.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes().count() - 1
    }
}

impl<V: fmt::Debug> fmt::Debug for FilterTrie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries().map(|entry| (&entry.filter, &entry.value)))
            .finish()
    }
}

/// A last-in-first-out stack that allocates only past its first `INLINE` items. A match
/// holds the node it goes to next and one per `+` branch it has yet to take, so only a
/// topic with more than 15 levels that are each matched by both a `+` and a literal
/// level makes it allocate.
struct Stack<T> {
    inline: [Option<T>; INLINE],
    inline_len: usize,
    /// Used only while `inline` is full.
    spilled: Vec<T>,
}

const INLINE: usize = 16;

impl<T> Default for Stack<T> {
    fn default() -> Self {
        Self {
            inline: [const { None }; INLINE],
            inline_len: 0,
            spilled: Vec::new(),
        }
    }
}

impl<T> Stack<T> {
    fn push(&mut self, item: T) {
        if self.inline_len < INLINE {
            self.inline[self.inline_len] = Some(item);
            self.inline_len += 1;
        } else {
            self.spilled.push(item);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(item) = self.spilled.pop() {
            return Some(item);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline[self.inline_len].take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trie holding each of `filters` with its index.
    fn trie(filters: &[&str]) -> FilterTrie<usize> {
        let mut trie = FilterTrie::default();
        for (i, filter) in filters.iter().enumerate() {
            trie.entry_or_insert_with(filter, || i);
        }
        trie
    }

    /// The filters matching `topic`, sorted, each as often as it was reported.
    fn matching(trie: &FilterTrie<usize>, topic: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |filter, _| found.push(filter.to_owned()));
        found.sort();
        found
    }

    #[track_caller]
    fn assert_matches(filter: &str, matched: &[&str], unmatched: &[&str]) {
        let trie = trie(&[filter]);
        for topic in matched {
            assert_eq!(
                matching(&trie, topic),
                [filter],
                "{filter} should match {topic:?}"
            );
        }
        for topic in unmatched {
            assert!(
                matching(&trie, topic).is_empty(),
                "{filter} matched {topic:?}"
            );
        }
    }

    #[test]
    fn plus_matches_exactly_one_level_which_may_be_empty() {
        assert_matches(
            "a/+/c",
            &["a/b/c", "a//c", "a/+/c"],
            &["a/c", "a/b/d/c", "a/b", "a/b/c/"],
        );
        assert_matches("+", &["a", ""], &["a/b", "/", "/a"]);
        assert_matches("+/+", &["/", "a/b", "a/"], &["a", "a/b/c"]);
        assert_matches("a/+", &["a/b", "a/"], &["a", "a/b/c", "b/a"]);
    }

    #[test]
    fn hash_matches_the_parent_level_and_any_number_of_children() {
        assert_matches(
            "a/#",
            &["a", "a/", "a/b", "a/b/c", "a//"],
            &["b", "ab", "b/a", "/a"],
        );
        assert_matches("#", &["a", "a/b/c", "/", "", "a/$x"], &[]);
        assert_matches("a/+/#", &["a/b", "a/b/c", "a/", "a//"], &["a", "b/c"]);
        assert_matches("/#", &["/", "/a", "/a/b"], &["a", "a/"]);
    }

    #[test]
    fn empty_levels_are_levels_like_any_other() {
        assert_matches("a//b", &["a//b"], &["a/b", "a///b", "a/ /b"]);
        assert_matches("/a", &["/a"], &["a", "//a", "a/"]);
        assert_matches("a/", &["a/"], &["a", "a//"]);
        assert_matches("+/a", &["/a", "b/a"], &["a", "//a"]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_a_first_level_wildcard() {
        for filter in ["#", "+", "+/x", "+/#", "+/+"] {
            assert_matches(filter, &[], &["$SYS", "$SYS/x", "$x"]);
        }
        assert_matches(
            "$SYS/#",
            &["$SYS", "$SYS/x", "$SYS/x/y"],
            &["SYS/x", "$SYSX"],
        );
        assert_matches("$SYS/+", &["$SYS/x"], &["$SYS", "$SYS/x/y"]);
        assert_matches("$SYS/x", &["$SYS/x"], &["$SYS/y"]);
        // Only the topic's first character counts.
        assert_matches("a/+", &["a/$x"], &[]);
        assert_matches("#", &["a/$x", "x$"], &[]);
    }

    #[test]
    fn an_exact_filter_matches_only_its_own_topic() {
        assert_matches(
            "dc1/sensors/7/temp",
            &["dc1/sensors/7/temp"],
            &[
                "dc1/sensors/7",
                "dc1/sensors/7/temp/",
                "dc1/sensors/70/temp",
                "dc1/sensors/+/temp",
                "/dc1/sensors/7/temp",
            ],
        );
    }

    #[test]
    fn overlapping_filters_are_each_reported_once() {
        let filters = [
            "#", "a/#", "a/b/#", "a/+", "+/b", "+/+", "a/b", "+/#", "a/c", "b/#",
        ];
        let trie = trie(&filters);
        let expected = ["#", "+/#", "+/+", "+/b", "a/#", "a/+", "a/b", "a/b/#"];
        assert_eq!(matching(&trie, "a/b"), expected);
        let mut seen = Vec::new();
        trie.for_each_match("a/b", |filter, i| seen.push((filter.to_owned(), *i)));
        for (filter, i) in seen {
            assert_eq!(filters[i], filter, "each filter is given its own value");
        }
    }

    #[test]
    fn entries_are_found_changed_and_removed_by_their_exact_filter() {
        let mut trie = FilterTrie::default();
        assert!(trie.is_empty());
        *trie.entry_or_insert_with("a/+", || 1) += 10;
        assert_eq!(*trie.entry_or_insert_with("a/+", || panic!("present")), 11);
        trie.entry_or_insert_with("a/#", || 2);
        trie.entry_or_insert_with("a", || 3);
        assert_eq!((trie.len(), trie.is_empty()), (3, false));
        assert_eq!(trie.get("a/+"), Some(&11));
        assert_eq!(trie.get("a/#"), Some(&2));
        assert_eq!(trie.get("a/b"), None, "a lookup does not match wildcards");
        assert_eq!(trie.get("a/"), None);
        *trie.get_mut("a/#").expect("present") = 20;
        assert_eq!(trie.get_mut("#"), None);
        let mut filters: Vec<_> = trie.filters().collect();
        filters.sort_unstable();
        assert_eq!(filters, ["a", "a/#", "a/+"]);

        assert_eq!(trie.remove("a/#"), Some(20));
        assert_eq!(trie.remove("a/#"), None);
        assert_eq!(trie.remove("a/b/c"), None);
        assert_eq!(trie.get("a/+"), Some(&11));
        assert_eq!(trie.len(), 2);
        assert_eq!(trie.remove("a/+"), Some(11));
        assert_eq!(format!("{trie:?}"), r#"{"a": 3}"#);
    }

    #[test]
    fn remove_prunes_every_node_it_leaves_empty() {
        let mut trie = FilterTrie::default();
        for round in 0..3 {
            for i in 0..1_000 {
                trie.entry_or_insert_with(&format!("dc1/sensors/{i}/temp"), || round);
                trie.entry_or_insert_with(&format!("dc1/+/{i}/#"), || round);
            }
            trie.entry_or_insert_with("dc1/sensors", || round);
            assert_eq!(trie.node_count(), 2 + 2 * 1_000 + 1 + 1_000);
            for i in 0..1_000 {
                assert_eq!(trie.remove(&format!("dc1/sensors/{i}/temp")), Some(round));
            }
            assert_eq!(
                trie.node_count(),
                2 + 1 + 1_000,
                "dc1, sensors; +, its 1,000 ids"
            );
            for i in 0..1_000 {
                assert_eq!(trie.remove(&format!("dc1/+/{i}/#")), Some(round));
            }
            assert_eq!(trie.node_count(), 2, "dc1/sensors still holds a filter");
            assert_eq!(trie.remove("dc1/sensors"), Some(round));
            assert_eq!((trie.node_count(), trie.len()), (0, 0));
        }
        trie.entry_or_insert_with("#", || 0);
        assert_eq!(trie.node_count(), 0, "# lives in the root");
        trie.remove("#");
        assert!(trie.is_empty());
    }

    #[test]
    fn odd_filters_and_topics_do_not_panic() {
        // None of these filters is valid; each is held and found again as written.
        let odd = [
            "", "a/#/b", "#/a", "a#", "a+", "++", "a/##", "//", "é/+", "+/é",
        ];
        let mut trie = trie(&odd);
        assert_eq!(trie.len(), odd.len());
        for (i, filter) in odd.iter().enumerate() {
            assert_eq!(trie.get(filter), Some(&i), "{filter:?}");
        }
        for topic in ["", "/", "#", "+", "a/#/b", "é", "é/x", "\u{0}", "$", "$/é"] {
            trie.for_each_match(topic, |_, _| {});
        }
        assert_eq!(matching(&trie, "é/x"), ["é/+"]);
        for filter in odd {
            assert!(trie.remove(filter).is_some(), "{filter:?}");
        }
        assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn the_longest_legal_filter_and_topic_do_not_overflow_the_stack() {
        // 65,535 bytes (the MQTT string limit) of `/`: 65,536 empty levels.
        let deep = "/".repeat(65_535);
        let plus = "+/".repeat(32_767) + "+";
        let mut trie = trie(&[&deep, &plus, &format!("{deep}/#")]);
        assert_eq!(matching(&trie, &deep).len(), 2);
        assert_eq!(matching(&trie, &plus[..plus.len() - 2]).len(), 0);
        assert_eq!(trie.remove(&deep), Some(0));
        assert_eq!(trie.node_count(), 65_536 + 32_768);
        assert_eq!(
            trie.remove(&format!("{deep}/#")),
            Some(2),
            "prunes 65,536 nodes"
        );
        assert_eq!(trie.node_count(), 32_768);
        drop(trie);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn sizes_the_memory_estimate_relies_on() {
        use std::mem::size_of;
        assert_eq!(size_of::<HashMap<Box<str>, Box<Node<u64>>>>(), 48);
        assert_eq!(size_of::<(Box<str>, Box<Node<u64>>)>(), 24);
        assert_eq!(size_of::<Node<u64>>(), 88);
        assert_eq!(size_of::<Node<[u64; 3]>>(), 88 + 16);
    }
}

#[cfg(test)]
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Section 4.7 of MQTT 3.1.1 / 5, written out level by level. It is
    /// `rumqttc::matches` except on topics starting with `$`, which rumqttc matches with
    /// no filter at all, and it does not panic on a first character outside ASCII.
    fn spec_matches(topic: &str, filter: &str) -> bool {
        let first = filter.split('/').next();
        if topic.starts_with('$') && matches!(first, Some("+" | "#")) {
            return false;
        }
        let mut topic = topic.split('/');
        for level in filter.split('/') {
            if level == "#" {
                return true;
            }
            match topic.next() {
                Some(name) if level == "+" || level == name => {}
                _ => return false,
            }
        }
        topic.next().is_none()
    }

    /// Levels from so few names that filters and topics collide often.
    fn name() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("$x"), Just("")]
    }

    fn topic() -> impl Strategy<Value = String> {
        vec(name(), 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop_oneof![2 => name(), 1 => Just("+")];
        (vec(level, 0..4), any::<bool>()).prop_filter_map("no levels", |(levels, hash)| {
            let mut levels = levels;
            if hash || levels.is_empty() {
                levels.push("#");
            }
            Some(levels.join("/")).filter(|filter| rumqttc::valid_filter(filter))
        })
    }

    /// The filters matching `topic`, sorted, each as often as it was reported.
    fn matching<V>(trie: &FilterTrie<V>, topic: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |filter, _| found.push(filter.to_owned()));
        found.sort();
        found
    }

    /// Every distinct path of levels the `filters` need a node for.
    fn paths(filters: impl IntoIterator<Item = impl AsRef<str>>) -> BTreeSet<Vec<String>> {
        let mut paths = BTreeSet::new();
        for filter in filters {
            let levels: Vec<_> = levels(parse(filter.as_ref()).0).map(String::from).collect();
            for depth in 1..=levels.len() {
                paths.insert(levels[..depth].to_vec());
            }
        }
        paths
    }

    proptest! {
        #[test]
        fn a_topic_matches_exactly_the_filters_the_spec_says_each_once(
            filters in vec(filter(), 0..24),
            topics in vec(topic(), 1..8),
        ) {
            let mut trie = FilterTrie::default();
            for filter in &filters {
                trie.entry_or_insert_with(filter, || filter.clone());
            }
            let distinct: BTreeSet<_> = filters.iter().cloned().collect();
            prop_assert_eq!(trie.len(), distinct.len());
            for topic in &topics {
                let expected: Vec<_> =
                    distinct.iter().filter(|f| spec_matches(topic, f)).cloned().collect();
                prop_assert_eq!(matching(&trie, topic), expected, "topic {:?}", topic);
                trie.for_each_match(topic, |filter, value| assert_eq!(filter, value));
            }
        }

        #[test]
        fn the_spec_is_rumqttc_matches_but_for_dollar_topics(
            filter in filter(),
            topic in topic(),
        ) {
            let rumqttc = rumqttc::matches(&topic, &filter);
            if topic.starts_with('$') {
                // rumqttc 0.25.1 matches no filter to a `$` topic, `$x/#` included.
                prop_assert!(!rumqttc);
            } else {
                prop_assert_eq!(spec_matches(&topic, &filter), rumqttc);
            }
        }

        #[test]
        fn inserts_and_removes_keep_exactly_the_nodes_the_filters_need(
            ops in vec((any::<bool>(), filter()), 0..48),
            topics in vec(topic(), 1..4),
        ) {
            let mut trie = FilterTrie::default();
            let mut model = BTreeMap::new();
            for (i, (insert, filter)) in ops.iter().enumerate() {
                if *insert {
                    let held = *trie.entry_or_insert_with(filter, || i);
                    prop_assert_eq!(held, *model.entry(filter.clone()).or_insert(i));
                } else {
                    prop_assert_eq!(trie.remove(filter), model.remove(filter));
                }
                prop_assert_eq!(trie.node_count(), paths(model.keys()).len());
            }
            prop_assert_eq!(trie.len(), model.len());
            let held: BTreeSet<_> = trie.filters().map(String::from).collect();
            prop_assert_eq!(&held, &model.keys().cloned().collect());
            for (filter, i) in &model {
                prop_assert_eq!(trie.get(filter), Some(i));
            }
            for topic in &topics {
                let expected: Vec<_> =
                    model.keys().filter(|f| spec_matches(topic, f)).cloned().collect();
                prop_assert_eq!(matching(&trie, topic), expected);
            }
            for filter in model.keys() {
                prop_assert!(trie.remove(filter).is_some());
            }
            prop_assert_eq!((trie.node_count(), trie.len()), (0, 0));
        }
    }
}
