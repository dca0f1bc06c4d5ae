//! ingress-nginx's Prometheus metrics, served on the healthz port at `/metrics`:
//! `nginx_ingress_controller_requests` (client requests by the Ingress, Service, path
//! and server that routed them, method and status), and the configuration reloads
//! (`nginx_ingress_controller_success`, here a swap of the snapshot, which cannot fail:
//! `nginx_ingress_controller_config_last_reload_successful` stays 1).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::snapshot::{Backend, Route};

/// What routed a request: its server (host or `_`), the Ingress and path of the
/// matching location, and the Service behind it; empty where there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels {
    pub host: String,
    pub ingress: String,
    pub namespace: String,
    pub path: String,
    pub service: String,
}

impl Labels {
    pub fn of(route: &Route<'_>) -> Labels {
        let ingress = route
            .location
            .map(|l| &l.ingress)
            .or(route.server.default_ingress.as_ref());
        Labels {
            host: route.server.name.clone(),
            ingress: ingress.map(|k| k.name.clone()).unwrap_or_default(),
            namespace: ingress.map(|k| k.namespace.clone()).unwrap_or_default(),
            path: route
                .location
                .map(|l| l.rule.path.clone())
                .unwrap_or_default(),
            service: match route.backend {
                Backend::Upstream(upstream) => upstream.service.clone(),
                Backend::NotFound => String::new(),
            },
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Labels, String, u16), u64>>,
    reloads: AtomicU64,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one request answered `status`.
    pub fn request(&self, labels: Labels, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests
            .entry((labels, method.to_string(), status))
            .or_default() += 1;
    }

    /// Counts one swap of the snapshot.
    pub fn reloaded(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP nginx_ingress_controller_requests The total number of client requests\n\
             # TYPE nginx_ingress_controller_requests counter\n",
        );
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        for ((labels, method, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "nginx_ingress_controller_requests{{host=\"{}\",ingress=\"{}\",method=\"{}\",\
                 namespace=\"{}\",path=\"{}\",service=\"{}\",status=\"{status}\"}} {count}",
                escape(&labels.host),
                escape(&labels.ingress),
                escape(method),
                escape(&labels.namespace),
                escape(&labels.path),
                escape(&labels.service),
            );
        }
        let _ = write!(
            out,
            "# HELP nginx_ingress_controller_success Cumulative number of Ingress controller reload operations\n\
             # TYPE nginx_ingress_controller_success counter\n\
             nginx_ingress_controller_success {}\n\
             # HELP nginx_ingress_controller_config_last_reload_successful Whether the last configuration reload attempt was successful\n\
             # TYPE nginx_ingress_controller_config_last_reload_successful gauge\n\
             nginx_ingress_controller_config_last_reload_successful 1\n",
            self.reloads.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::path::normalize;
    use crate::snapshot::Objects;
    use crate::testing::{build, ingress, nginx_class};

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let snapshot = build(&Objects {
            ingresses: vec![ingress(
                "shop",
                0,
                json!({"rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/cart/", "pathType": "Prefix",
                     "backend": {"service": {"name": "cart", "port": {"number": 80}}}}]}}]}),
            )],
            classes: vec![nginx_class()],
            ..Objects::default()
        });
        let metrics = Metrics::default();
        let cart = Labels::of(&snapshot.route("shop.example.com", &normalize("/cart/a")));
        metrics.request(cart.clone(), "GET", 200);
        metrics.request(cart, "GET", 200);
        let none = Labels::of(&snapshot.route("other.example.com", "/"));
        metrics.request(none, "POST", 404);
        metrics.reloaded();
        let text = metrics.render();
        for line in [
            "nginx_ingress_controller_requests{host=\"shop.example.com\",ingress=\"shop\",\
             method=\"GET\",namespace=\"default\",path=\"/cart\",service=\"cart\",status=\"200\"} 2",
            "nginx_ingress_controller_requests{host=\"_\",ingress=\"\",method=\"POST\",\
             namespace=\"\",path=\"\",service=\"\",status=\"404\"} 1",
            "nginx_ingress_controller_success 1",
            "nginx_ingress_controller_config_last_reload_successful 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
