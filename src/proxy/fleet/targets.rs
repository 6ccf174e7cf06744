//! Where a model-changing operation goes: every healthy box holding the model (delete,
//! copy), every healthy box (`X-Corral-Target: all`), or one box as the router picks it
//! (a pull, a create, `X-Corral-Target: NAME`).

use std::sync::Arc;

use crate::pool::{Backend, RoutingTable};
use crate::routing::{candidates, Need, NoRoute, RouteRequest};

use super::super::endpoint::Endpoint;
use super::super::{CorralProxy, RequestCtx};

/// Where a model-changing operation goes, and the `X-Corral-Route` that says why.
pub(in crate::proxy) struct FleetTargets {
    pub backends: Vec<Arc<Backend>>,
    pub reason: &'static str,
}

impl CorralProxy {
    /// The backends a model-changing operation goes to, or `None` when the request is
    /// proxied to one backend as usual.
    pub(in crate::proxy) fn fan_out_targets(
        &self,
        ctx: &RequestCtx,
    ) -> Option<Result<FleetTargets, NoRoute>> {
        let table = self.pool.load();
        let healthy = || table.backends.iter().filter(|b| b.is_available()).cloned();
        let fleet = |backends: Vec<Arc<Backend>>| {
            if backends.is_empty() {
                return Err(NoRoute::NoHealthy);
            }
            Ok(FleetTargets {
                backends,
                reason: "fleet",
            })
        };
        Some(match (&ctx.endpoint, ctx.target_all, &ctx.route.need) {
            (Endpoint::Pull | Endpoint::Delete | Endpoint::Copy, true, _) => {
                fleet(healthy().collect())
            }
            (Endpoint::Delete | Endpoint::Copy, false, Need::Model(m)) => {
                let holding: Vec<_> = healthy().filter(|b| b.state.has_model(m)).collect();
                if holding.is_empty() && !table.backends.iter().any(|b| b.state.has_model(m)) {
                    return Some(Err(NoRoute::ModelNotFound(m.clone())));
                }
                fleet(holding)
            }
            (
                Endpoint::Pull | Endpoint::Create | Endpoint::Delete | Endpoint::Copy,
                false,
                Need::Lacking(_) | Need::Pinned | Need::Named(_),
            ) => self.one_box(&table, &ctx.route),
            _ => return None,
        })
    }

    /// The one box a pull, create or targeted operation goes to: the router's choice.
    /// A pull or create runs no model, so it takes no slot and does not queue for one:
    /// when every candidate's slots are taken, the least loaded candidate gets it.
    fn one_box(&self, table: &RoutingTable, route: &RouteRequest) -> Result<FleetTargets, NoRoute> {
        let (backend, reason) = match self.router.pick_backend(table, route, &[]) {
            Ok(pick) => (pick.backend, pick.reason.as_str()),
            Err(NoRoute::Full) => {
                let found = candidates(table, &route.need, &[])?;
                let least = found
                    .list
                    .iter()
                    .min_by_key(|c| (c.in_flight * 1000) / c.capacity.max(1))
                    .ok_or(NoRoute::NoHealthy)?;
                (least.backend.clone(), "least_loaded")
            }
            Err(e) => return Err(e),
        };
        Ok(FleetTargets {
            backends: vec![backend],
            reason,
        })
    }
}
