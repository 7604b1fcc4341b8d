//! [`Bucket`]: a read-only view of one bucket, like Flutter's `RestorationBucket`.

use std::collections::{BTreeMap, BTreeSet};

use super::error::RestorationError;
use super::path::BucketPath;
use super::tree::{buckets_under, Buckets, Entry, Lifetime, Slot};
use super::value::Value;

/// A read-only view of the bucket at one path of one lifetime.
///
/// Navigation never fails: a child that holds nothing is an empty bucket, and so is a child
/// whose name breaks the segment rules of [`BucketPath`] (nothing can ever be stored there; writes
/// to such a name are rejected by planning). Use [`try_child`](Self::try_child) to get the
/// naming error instead.
#[derive(Debug, Clone)]
pub struct Bucket<'a> {
    buckets: &'a Buckets,
    lifetime: Lifetime,
    /// `None` once an invalid segment was followed.
    path: Option<BucketPath>,
}

impl<'a> Bucket<'a> {
    pub(crate) fn new(buckets: &'a Buckets, lifetime: Lifetime, path: Option<BucketPath>) -> Self {
        Bucket {
            buckets,
            lifetime,
            path,
        }
    }

    /// The lifetime this bucket belongs to.
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// This bucket's path, or `None` if it was reached through an invalid segment.
    pub fn path(&self) -> Option<&BucketPath> {
        self.path.as_ref()
    }

    /// The child bucket `segment` (empty if nothing is stored there or the name is invalid).
    pub fn child(&self, segment: &str) -> Bucket<'a> {
        let path = self.path.as_ref().and_then(|p| p.child(segment).ok());
        Bucket::new(self.buckets, self.lifetime, path)
    }

    /// The child bucket `segment`, or the naming error.
    pub fn try_child(&self, segment: &str) -> Result<Bucket<'a>, RestorationError> {
        let path = match &self.path {
            Some(p) => Some(p.child(segment)?),
            None => {
                BucketPath::root().child(segment)?;
                None
            }
        };
        Ok(Bucket::new(self.buckets, self.lifetime, path))
    }

    fn own(&self) -> Option<&'a BTreeMap<String, Slot>> {
        let path = self.path.as_ref()?;
        self.buckets.get(path.as_str())
    }

    /// The entry at `key`, if any.
    pub fn read(&self, key: &str) -> Option<&'a Entry> {
        self.own()?.get(key).map(|s| &s.entry)
    }

    /// The value at `key`, if any.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.read(key).map(|e| &e.value)
    }

    /// The counted size of the entry at `key` (see [`super::entry_size`]).
    pub fn entry_size(&self, key: &str) -> Option<usize> {
        self.own()?.get(key).map(|s| s.size)
    }

    /// The keys of this bucket's entries, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.own()
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// This bucket's entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        self.own()
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, s)| (k.as_str(), &s.entry)))
    }

    /// The names of the direct children that hold something (in themselves or below), sorted.
    pub fn children(&self) -> Vec<&'a str> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let skip = if path.is_root() {
            0
        } else {
            path.as_str().len() + 1
        };
        let names: BTreeSet<&'a str> = buckets_under(self.buckets, path)
            .filter_map(|(p, _)| p.get(skip..))
            .filter(|rest| !rest.is_empty())
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        names.into_iter().collect()
    }

    /// `true` if neither this bucket nor any bucket below it holds an entry.
    pub fn is_empty(&self) -> bool {
        match &self.path {
            Some(path) => buckets_under(self.buckets, path).next().is_none(),
            None => true,
        }
    }
}
