//! CoreDNS's request metrics in the Prometheus text format:
//! `coredns_dns_requests_total`, `coredns_dns_responses_total` and the
//! `coredns_dns_request_duration_seconds` histogram, labelled as CoreDNS labels them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// CoreDNS's duration buckets: exponential from 0.25 ms, doubling, 16 buckets.
fn buckets() -> impl Iterator<Item = f64> {
    (0..16).map(|i| 0.00025 * f64::powi(2.0, i))
}

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (proto, family, type)
    requests: BTreeMap<(&'static str, u8, String), u64>,
    responses: BTreeMap<String, u64>,
    durations: BTreeMap<String, Histogram>,
}

/// One request, as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub proto: &'static str,
    /// 1 for IPv4 clients, 2 for IPv6 (CoreDNS's `family`).
    pub family: u8,
    pub qtype: Option<RecordType>,
    pub rcode: ResponseCode,
    pub took: Duration,
}

#[derive(Debug)]
pub struct Metrics {
    server: String,
    zone: String,
    inner: Mutex<Inner>,
}

/// The type label: CoreDNS names the common types and counts the rest as `other`.
fn type_label(qtype: Option<RecordType>) -> String {
    use RecordType::*;
    match qtype {
        Some(
            t @ (A | AAAA | NS | PTR | SOA | CNAME | MX | TXT | SRV | ANY | AXFR | IXFR | OPT
            | HTTPS | SVCB | CAA | DS | DNSKEY | NAPTR),
        ) => t.to_string(),
        _ => "other".to_string(),
    }
}

fn rcode_label(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::BADVERS => "BADVERS".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

impl Metrics {
    /// Metrics of the server `dns://<addr>` serving `zone`.
    pub fn new(server: String, zone: String) -> Metrics {
        Metrics {
            server,
            zone,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn observe(&self, o: Observation) {
        let qtype = type_label(o.qtype);
        let secs = o.took.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner
            .requests
            .entry((o.proto, o.family, qtype.clone()))
            .or_default() += 1;
        *inner.responses.entry(rcode_label(o.rcode)).or_default() += 1;
        let h = inner.durations.entry(qtype).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; buckets().count()];
        }
        for (count, le) in h.counts.iter_mut().zip(buckets()) {
            if secs <= le {
                *count += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let base = format!(
            "server=\"{}\",zone=\"{}\",view=\"\"",
            self.server, self.zone
        );
        let mut out = String::new();
        out.push_str("# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.\n");
        out.push_str("# TYPE coredns_dns_requests_total counter\n");
        for ((proto, family, qtype), n) in &inner.requests {
            let _ = writeln!(
                out,
                "coredns_dns_requests_total{{{base},proto=\"{proto}\",family=\"{family}\",type=\"{qtype}\"}} {n}"
            );
        }
        out.push_str("# HELP coredns_dns_responses_total Counter of response status codes.\n");
        out.push_str("# TYPE coredns_dns_responses_total counter\n");
        for (rcode, n) in &inner.responses {
            let _ = writeln!(
                out,
                "coredns_dns_responses_total{{{base},rcode=\"{rcode}\",plugin=\"kubernetes\"}} {n}"
            );
        }
        out.push_str("# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took per zone.\n");
        out.push_str("# TYPE coredns_dns_request_duration_seconds histogram\n");
        for (qtype, h) in &inner.durations {
            let labels = format!("{base},type=\"{qtype}\"");
            for (count, le) in h.counts.iter().zip(buckets()) {
                let _ = writeln!(
                    out,
                    "coredns_dns_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "coredns_dns_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "coredns_dns_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "coredns_dns_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_render() {
        let m = Metrics::new("dns://:53".into(), ".".into());
        m.observe(Observation {
            proto: "udp",
            family: 1,
            qtype: Some(RecordType::A),
            rcode: ResponseCode::NXDomain,
            took: Duration::from_micros(100),
        });
        let text = m.render();
        assert!(text.contains("coredns_dns_requests_total{server=\"dns://:53\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"} 1"), "{text}");
        assert!(text.contains("coredns_dns_responses_total{server=\"dns://:53\",zone=\".\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 1"));
        assert!(text.contains("coredns_dns_request_duration_seconds_bucket{server=\"dns://:53\",zone=\".\",view=\"\",type=\"A\",le=\"0.00025\"} 1"));
        assert!(text.contains("coredns_dns_request_duration_seconds_count{server=\"dns://:53\",zone=\".\",view=\"\",type=\"A\"} 1"));
    }
}
