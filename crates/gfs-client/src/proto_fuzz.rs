//! The conversions at the client's protocol edge (`TryFrom<proto>`) take any message a peer
//! can send, decoded from any bytes: each converts or says why not; none panics.

#![allow(clippy::unwrap_used)]

use gfs_proto::v1 as proto;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

use crate::{ClusterReport, Entry};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn protocol_conversions_take_any_decodable_message(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(m) = proto::StatReply::decode(&bytes[..]) {
            let _ = Entry::try_from(m);
        }
        if let Ok(m) = proto::ClusterReport::decode(&bytes[..]) {
            let _ = ClusterReport::try_from(m);
        }
    }

    #[test]
    fn a_report_with_any_server_states_converts_or_is_refused(
        states in vec(prop_oneof![
            Just("alive".to_string()),
            Just("dead".to_string()),
            Just("draining".to_string()),
            any::<String>(),
        ], 0..4),
        heartbeat in any::<u64>(),
    ) {
        let report = proto::ClusterReport {
            servers: states
                .into_iter()
                .map(|state| proto::ServerReport {
                    state,
                    last_heartbeat_ms_ago: heartbeat,
                    ..proto::ServerReport::default()
                })
                .collect(),
            master_uptime_ms: heartbeat,
            ..proto::ClusterReport::default()
        };
        let _ = ClusterReport::try_from(report);
    }
}
