//! Messages a master can send, decoded from any bytes, through the client's `TryFrom<proto>`
//! conversions: each converts or says why not.
#![no_main]

use gfs_proto::v1 as proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = proto::StatReply::decode(data) {
        let _ = gfs_client::Entry::try_from(m);
    }
    if let Ok(m) = proto::ClusterReport::decode(data) {
        let _ = gfs_client::ClusterReport::try_from(m);
    }
});
