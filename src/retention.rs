//! Retention: ended instances of a definition purged once they have been ended for a period
//! (`[retention]` of the server's configuration, `baton admin purge` by hand).
//!
//! Only completed and cancelled instances are purged; faulted ones wait for someone. A
//! definition without a policy keeps its instances for ever: leave out the definitions whose
//! histories are evidence (certificates, signed documents, audits).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_engine::store::PurgeQuery;
use baton_engine::{Clock, Store};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// How often the server applies its policies.
const EVERY: Duration = Duration::from_secs(3600);

/// One definition's retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `namespace/name`.
    pub definition: String,
    /// How long an ended instance is kept.
    pub keep_for: Duration,
}

/// The policies of a configuration's `[retention]` table (definition = ISO 8601 duration).
pub fn policies(table: &BTreeMap<String, String>) -> anyhow::Result<Vec<Policy>> {
    table
        .iter()
        .map(|(definition, period)| {
            let keep_for = crate::parse_duration(period).with_context(|| format!("the retention of {definition}"))?;
            Ok(Policy { definition: definition.clone(), keep_for })
        })
        .collect()
}

/// Purges, for each policy, the instances ended longer ago than it keeps them; the count per
/// definition.
pub async fn apply(store: &dyn Store, now: DateTime<Utc>, policies: &[Policy]) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts = Vec::new();
    for policy in policies {
        let keep_for = chrono::Duration::from_std(policy.keep_for).unwrap_or(chrono::Duration::MAX);
        let query = PurgeQuery {
            definition: Some(policy.definition.clone()),
            ended_before: now.checked_sub_signed(keep_for).unwrap_or(DateTime::<Utc>::MIN_UTC),
            limit: PurgeQuery::MAX_LIMIT,
            dry_run: false,
        };
        let mut count = 0;
        loop {
            let purged = store.purge(&query).await?.len();
            count += purged;
            if purged < query.effective_limit() as usize {
                break;
            }
        }
        counts.push((policy.definition.clone(), count));
    }
    Ok(counts)
}

/// Applies the policies at start and every hour until `cancel`.
pub async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, policies: Vec<Policy>, cancel: CancellationToken) {
    if policies.is_empty() {
        return;
    }
    loop {
        match apply(store.as_ref(), clock.now(), &policies).await {
            Ok(counts) => {
                for (definition, purged) in counts.into_iter().filter(|(_, n)| *n > 0) {
                    tracing::info!(%definition, purged, "retention: ended instances purged");
                }
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "retention: the purge failed; trying again later")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use baton_engine::store::memory::MemoryStore;
    use baton_engine::store::{HistoryStore, InstanceRow, InstanceWrite, StepStore};
    use baton_engine::{InstanceId, InstanceStatus};

    use super::*;

    fn row(id: &str, definition: &str, ended: DateTime<Utc>) -> InstanceWrite {
        let row = InstanceRow {
            id: InstanceId::new(id),
            orchestration: definition.to_owned(),
            version: "1".to_owned(),
            status: InstanceStatus::Completed,
            next_seq: 0,
            last_hash: String::new(),
            run_start: 0,
            idempotency_key: None,
            parent: None,
            created_at: ended,
            updated_at: ended,
            result: None,
            business_key: None,
            tags: Vec::new(),
            namespace: None,
            initiator: None,
        };
        InstanceWrite { instance: Some(row), ..InstanceWrite::default() }
    }

    #[tokio::test]
    async fn each_definition_keeps_its_ended_instances_for_its_period_and_others_for_ever() {
        let store = MemoryStore::new();
        let now = Utc::now();
        let days = |n: i64| now - chrono::Duration::days(n);
        let writes = [
            row("old-approval", "training/approval", days(40)),
            row("new-approval", "training/approval", days(10)),
            row("old-certificate", "training/certificate", days(4000)),
        ];
        store.commit(&writes).await.expect("commit");
        let table = BTreeMap::from([("training/approval".to_owned(), "P30D".to_owned())]);
        let approval = policies(&table).expect("policies");
        assert_eq!(approval[0].keep_for, Duration::from_secs(30 * 86_400));
        let counts = apply(&store, now, &approval).await.expect("apply");
        assert_eq!(counts, vec![("training/approval".to_owned(), 1)]);
        for (id, kept) in [("old-approval", false), ("new-approval", true), ("old-certificate", true)] {
            let found = store.instance(&InstanceId::new(id)).await.expect("read").is_some();
            assert_eq!(found, kept, "{id}");
        }
        let bad = BTreeMap::from([("x/y".to_owned(), "soon".to_owned())]);
        assert!(format!("{:#}", policies(&bad).expect_err("not a duration")).contains("the retention of x/y"));
    }
}
