//! Hostname intersection between a listener and a route (`controller.md` §3.3).

/// The hostnames a rule serves through the listeners that accepted its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hostnames {
    /// Neither side restricts the host: the rule goes to the default bucket (no `hostnames` in the config).
    Any,
    /// Lowercased, sorted, without duplicates. Never empty.
    Only(Vec<String>),
}

impl Hostnames {
    /// Intersects one listener hostname with a route's hostnames (empty = unrestricted). `None` when nothing
    /// intersects.
    pub(crate) fn intersect(listener: Option<&str>, route: &[String]) -> Option<Hostnames> {
        let listener = listener.filter(|l| !l.is_empty());
        match (listener, route.is_empty()) {
            (None, true) => Some(Hostnames::Any),
            (None, false) => Hostnames::only(route.iter().map(|r| r.to_ascii_lowercase())),
            (Some(l), true) => Hostnames::only([l.to_ascii_lowercase()]),
            (Some(l), false) => Hostnames::only(route.iter().filter_map(|r| intersect_pair(l, r))),
        }
    }

    /// The union of two results; `Any` absorbs everything.
    pub(crate) fn union(self, other: Hostnames) -> Hostnames {
        match (self, other) {
            (Hostnames::Any, _) | (_, Hostnames::Any) => Hostnames::Any,
            (Hostnames::Only(mut a), Hostnames::Only(b)) => {
                a.extend(b);
                a.sort();
                a.dedup();
                Hostnames::Only(a)
            }
        }
    }

    /// The `hostnames` field of a config rule.
    pub(crate) fn into_config(self) -> Vec<String> {
        match self {
            Hostnames::Any => Vec::new(),
            Hostnames::Only(names) => names,
        }
    }

    fn only(names: impl IntoIterator<Item = String>) -> Option<Hostnames> {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names.dedup();
        (!names.is_empty()).then_some(Hostnames::Only(names))
    }
}

/// One listener hostname against one route hostname; both non-empty, possibly `*.` wildcards.
fn intersect_pair(listener: &str, route: &str) -> Option<String> {
    let l = listener.to_ascii_lowercase();
    let r = route.to_ascii_lowercase();
    match (wildcard_suffix(&l), wildcard_suffix(&r)) {
        (None, None) => (l == r).then_some(r),
        (Some(suffix), None) => covers(suffix, &r).then_some(r),
        (None, Some(suffix)) => covers(suffix, &l).then_some(l),
        (Some(ls), Some(rs)) => {
            if ls == rs || rs.ends_with(ls) {
                Some(r)
            } else if ls.ends_with(rs) {
                Some(l)
            } else {
                None
            }
        }
    }
}

/// `*.example.com` → `.example.com`.
fn wildcard_suffix(name: &str) -> Option<&str> {
    name.strip_prefix('*').filter(|s| s.starts_with('.'))
}

/// A wildcard covers an exact name that ends with its suffix and has at least one label before it.
fn covers(suffix: &str, exact: &str) -> bool {
    exact.len() > suffix.len() && exact.ends_with(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn only(list: &[&str]) -> Option<Hostnames> {
        Some(Hostnames::Only(names(list)))
    }

    #[test]
    fn unset_listener_hostname_keeps_route_hostnames() {
        assert_eq!(
            Hostnames::intersect(None, &names(&["B.example.com", "a.example.com"])),
            only(&["a.example.com", "b.example.com"])
        );
    }

    #[test]
    fn unset_route_hostnames_take_the_listener_hostname() {
        assert_eq!(
            Hostnames::intersect(Some("*.example.com"), &[]),
            only(&["*.example.com"])
        );
    }

    #[test]
    fn both_unset_is_the_default_bucket() {
        assert_eq!(Hostnames::intersect(None, &[]), Some(Hostnames::Any));
    }

    #[test]
    fn exact_names_intersect_only_when_equal_ignoring_case() {
        assert_eq!(
            Hostnames::intersect(Some("Foo.com"), &names(&["foo.COM"])),
            only(&["foo.com"])
        );
        assert_eq!(Hostnames::intersect(Some("foo.com"), &names(&["bar.com"])), None);
    }

    #[test]
    fn listener_wildcard_narrows_to_covered_route_names() {
        let route = names(&["foo.example.com", "a.b.example.com", "example.com", "other.org"]);
        assert_eq!(
            Hostnames::intersect(Some("*.example.com"), &route),
            only(&["a.b.example.com", "foo.example.com"])
        );
    }

    #[test]
    fn route_wildcard_narrows_to_the_exact_listener_name() {
        assert_eq!(
            Hostnames::intersect(Some("foo.example.com"), &names(&["*.example.com"])),
            only(&["foo.example.com"])
        );
        assert_eq!(
            Hostnames::intersect(Some("example.com"), &names(&["*.example.com"])),
            None
        );
    }

    #[test]
    fn two_wildcards_give_the_more_specific_one() {
        assert_eq!(
            Hostnames::intersect(Some("*.example.com"), &names(&["*.foo.example.com"])),
            only(&["*.foo.example.com"])
        );
        assert_eq!(
            Hostnames::intersect(Some("*.foo.example.com"), &names(&["*.example.com"])),
            only(&["*.foo.example.com"])
        );
        assert_eq!(
            Hostnames::intersect(Some("*.example.com"), &names(&["*.example.com"])),
            only(&["*.example.com"])
        );
        assert_eq!(
            Hostnames::intersect(Some("*.example.com"), &names(&["*.example.org"])),
            None
        );
    }

    #[test]
    fn union_with_the_default_bucket_is_the_default_bucket() {
        let a = Hostnames::Only(names(&["a.com"]));
        assert_eq!(a.clone().union(Hostnames::Any), Hostnames::Any);
        assert_eq!(
            a.union(Hostnames::Only(names(&["b.com", "a.com"]))),
            Hostnames::Only(names(&["a.com", "b.com"]))
        );
    }
}
