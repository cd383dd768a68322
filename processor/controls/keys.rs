//! Which state rows a control's query can possibly use, found in its plan.
//!
//! A state table scanned only where an equi-join ties one of its columns to
//! a column of `due` — with nothing but row-wise steps (filters,
//! projections, aliases) between the scan and the join, and a join type that
//! drops the table's unmatched rows — contributes only rows whose key equals
//! some due row's key. Evaluation then reads just those rows through the
//! state's key index instead of scanning everything retained, so its cost
//! follows the due triggers, not the retention.

use datafusion::common::{Column, JoinType};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::schema::Topic;

/// A state table's rows that matter: those whose column equals the paired
/// due column of some due row, for any of the pairs (one per scan of the
/// table: a scan joined on several columns needs only one of them).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Restriction {
    pub topic: Topic,
    /// (state column name, due column name)
    pub keys: Vec<(String, String)>,
}

/// The restrictions that hold for `plan` (an optimized logical plan).
pub(super) fn restrictions(plan: &LogicalPlan) -> Vec<Restriction> {
    let mut scans: Vec<(usize, Topic)> = Vec::new();
    let mut keyed: Vec<(usize, Topic, String, String)> = Vec::new();
    visit(plan, &mut |node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(topic) = Topic::from_name(scan.table_name.table()) {
                scans.push((node as *const LogicalPlan as usize, topic));
            }
        }
        if let LogicalPlan::Join(join) = node {
            if join.null_aware {
                return;
            }
            let (left_ok, right_ok) = restrictable(join.join_type);
            for (l, r) in &join.on {
                let (Expr::Column(l), Expr::Column(r)) = (l, r) else { continue };
                for (side_ok, side, key, other, other_key) in
                    [(right_ok, &join.right, r, &join.left, l), (left_ok, &join.left, l, &join.right, r)]
                {
                    if !side_ok {
                        continue;
                    }
                    let (Some(state), Some(due)) = (trace(side, key, true), trace(other, other_key, false)) else {
                        continue;
                    };
                    if due.1 == "due" {
                        if let Some(topic) = Topic::from_name(&state.1) {
                            keyed.push((state.0, topic, state.2, due.2));
                        }
                    }
                }
            }
        }
    });
    let mut out: Vec<Restriction> = Vec::new();
    for topic in Topic::ALL {
        let of_topic: Vec<usize> = scans.iter().filter(|(_, t)| *t == topic).map(|(p, _)| *p).collect();
        if of_topic.is_empty() || !of_topic.iter().all(|p| keyed.iter().any(|k| k.0 == *p)) {
            continue;
        }
        let mut keys: Vec<(String, String)> = Vec::new();
        for scan in &of_topic {
            let pairs = keyed.iter().filter(|k| k.0 == *scan);
            match pairs.min_by_key(|k| coarse(&k.2)) {
                Some(best) if !coarse(&best.2) => keys.push((best.2.clone(), best.3.clone())),
                // Selecting by service or environment saves little.
                _ => keys.clear(),
            }
            if keys.is_empty() {
                break;
            }
        }
        if keys.is_empty() {
            continue;
        }
        keys.sort();
        keys.dedup();
        out.push(Restriction { topic, keys });
    }
    out
}

/// Identifiers select few rows; names of services, environments and the like
/// select many.
fn coarse(column: &str) -> bool {
    !["_id", "sha", "digest", "number", "principal"].iter().any(|k| column.ends_with(k))
}

/// Whether the (left, right) side may lose its rows that match nothing.
fn restrictable(join: JoinType) -> (bool, bool) {
    match join {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => (true, true),
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => (false, true),
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => (true, false),
        JoinType::Full => (false, false),
    }
}

fn visit<'a>(plan: &'a LogicalPlan, f: &mut dyn FnMut(&'a LogicalPlan)) {
    f(plan);
    for input in plan.inputs() {
        visit(input, f);
    }
}

/// The scan (its address, table name and column name) a column of `plan`'s
/// output comes from unchanged. `row_wise` allows only filters, projections
/// and aliases on the way (the restricted side); otherwise joins, sorts,
/// limits and distinct pass values through too.
fn trace(plan: &LogicalPlan, column: &Column, row_wise: bool) -> Option<(usize, String, String)> {
    let index = plan.schema().index_of_column(column).ok()?;
    match plan {
        LogicalPlan::TableScan(scan) => {
            let field = plan.schema().field(index);
            Some((plan as *const LogicalPlan as usize, scan.table_name.table().to_string(), field.name().clone()))
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let (qualifier, field) = alias.input.schema().qualified_field(index);
            trace(&alias.input, &Column::new(qualifier.cloned(), field.name()), row_wise)
        }
        LogicalPlan::Projection(projection) => match projection.expr.get(index)?.clone().unalias() {
            Expr::Column(inner) => trace(&projection.input, &inner, row_wise),
            _ => None,
        },
        LogicalPlan::Filter(filter) => trace(&filter.input, column, row_wise),
        LogicalPlan::Sort(sort) if !row_wise => trace(&sort.input, column, row_wise),
        LogicalPlan::Limit(limit) if !row_wise => trace(&limit.input, column, row_wise),
        LogicalPlan::Join(join) if !row_wise => {
            let side = if join.left.schema().has_column(column) { &join.left } else { &join.right };
            trace(side, column, row_wise)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::schema::Catalog;

    async fn restrictions_of(sql: &str) -> Vec<Restriction> {
        let catalog = Catalog::builtin().unwrap();
        let ctx = SessionContext::new();
        for topic in Topic::ALL {
            let schema = catalog.event(topic).arrow.clone();
            ctx.register_table(topic.name(), Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap())).unwrap();
        }
        let due = catalog.event(Topic::Deploy).arrow.clone();
        ctx.register_table("due", Arc::new(MemTable::try_new(due, vec![vec![]]).unwrap())).unwrap();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        restrictions(&ctx.state().optimize(&plan).unwrap())
    }

    #[tokio::test]
    async fn a_table_joined_only_by_a_due_key_is_restricted_to_it() {
        let r = restrictions_of(
            "SELECT d.deploy_id FROM due d WHERE NOT EXISTS \
             (SELECT 1 FROM change c WHERE c.change_id = d.change_id AND c.action = 'approved')",
        )
        .await;
        assert_eq!(r, vec![Restriction { topic: Topic::Change, keys: vec![("change_id".into(), "change_id".into())] }]);
    }

    #[tokio::test]
    async fn a_table_read_any_other_way_is_read_whole() {
        for sql in [
            // Not joined to due at all.
            "SELECT d.deploy_id FROM due d WHERE (SELECT count(*) FROM change) > 0",
            // Its unmatched rows are the output.
            "SELECT c.change_id FROM change c LEFT JOIN due d ON c.change_id = d.change_id",
            // Aggregated before the join.
            "SELECT d.deploy_id FROM due d JOIN (SELECT change_id, count(*) AS n FROM change GROUP BY change_id) x \
             ON x.change_id = d.change_id",
            // Keyed once, read whole once.
            "SELECT d.deploy_id FROM due d JOIN change c ON c.change_id = d.change_id \
             WHERE EXISTS (SELECT 1 FROM change a WHERE a.requester = d.actor)",
            // NOT IN: one null key in the table empties the answer.
            "SELECT d.deploy_id FROM due d WHERE d.change_id NOT IN (SELECT c.change_id FROM change c)",
            // Only by a coarse column.
            "SELECT d.deploy_id FROM due d JOIN change c ON c.service = d.service",
        ] {
            assert_eq!(restrictions_of(sql).await, vec![], "{sql}");
        }
    }
}
