//! `restoration_decode`: the restoration codec and loader on arbitrary bytes.
//!
//! Asserted: `codec::decode` never panics; when it decodes, the encoding is canonical
//! (`encode(decode(x)) == x`). The same bytes stored as a restoration row go through
//! `RestorationTree::load` without panicking, and the row is either kept or reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidesync_store::restoration::{
    codec, IssueKind, Lifetime, RestorationLimits, RestorationSchema, RestorationTree, StoredEntry,
};

fuzz_target!(|data: &[u8]| {
    let decoded = codec::decode(data);
    if let Ok(value) = &decoded {
        let encoded = codec::encode(value).expect("a decoded value encodes");
        assert_eq!(encoded, data, "the encoding of {value:?} is not canonical");
        assert_eq!(codec::encoded_len(value), Ok(data.len()));
    }
    let loaded = RestorationTree::load(
        [StoredEntry {
            lifetime: Lifetime::Persistent,
            path: "fuzz".into(),
            key: "entry".into(),
            tag: "fuzz.value".into(),
            version: 1,
            bytes: data.to_vec(),
        }],
        &RestorationSchema::default(),
        RestorationLimits::default(),
    );
    match &decoded {
        Err(_) => assert!(
            matches!(loaded.issues.as_slice(), [issue] if issue.kind == IssueKind::Undecodable),
            "undecodable bytes are reported once as such: {:?}",
            loaded.issues
        ),
        Ok(_) => assert!(loaded.issues.len() <= 1, "{:?}", loaded.issues),
    }
});
