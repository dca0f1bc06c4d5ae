//! The pod sandbox, as a container runtime makes it: a pause process that holds the
//! pod's namespaces (its network namespace, made by the CNI plugin's caller, plus a UTS
//! namespace with the pod's hostname and a mount namespace in which the kubelet's
//! `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname` cover the host's), and the
//! entry that puts every container process of the pod into those namespaces.
//!
//! Both run in a process of their own before any other thread exists, as `unshare`
//! and `setns` into a mount namespace require: `kubesim pause` and `kubesim nsenter`.
//! The files of `/etc` are pure functions of the pod, so they are tested alone.

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{chdir, execvp, sethostname, Pid};

/// The files a sandbox shows as `/etc/<name>`.
pub const ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

/// What the pause process prints once the sandbox is set up.
pub const READY: &[u8] = b"ready\n";

/// The most nameservers, search domains and the longest search line glibc reads, as
/// the kubelet enforces them.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_LINE: usize = 2048;

/// How the cluster's DNS looks to pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub nameserver: IpAddr,
    pub domain: String,
}

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads the lines a resolver honours from a resolv.conf text.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => {
                    conf.searches = words.map(str::to_owned).collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// The file, as the kubelet writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The pod's resolv.conf, by `dnsPolicy` and `dnsConfig` as the kubelet composes it;
/// `node` is the resolv.conf of the node, used by the `Default` policy and for the
/// host's search domains.
pub fn resolv_conf(pod: &Pod, cluster: &ClusterDns, node: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = &cluster.domain;
    let cluster_first = || {
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        searches.extend(node.searches.iter().cloned());
        ResolvConf {
            nameservers: vec![cluster.nameserver.to_string()],
            searches,
            options: vec!["ndots:5".to_owned()],
        }
    };
    let mut conf = match policy {
        "None" => ResolvConf::default(),
        "Default" => node.clone(),
        "ClusterFirst" if host_network => node.clone(),
        _ => cluster_first(),
    };
    if let Some(dns) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(dns.nameservers.iter().flatten().cloned());
        conf.searches.extend(dns.searches.iter().flatten().cloned());
        for option in dns.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let rendered = match option.value.as_deref() {
                Some(value) => format!("{name}:{value}"),
                None => name.to_owned(),
            };
            conf.options.retain(|o| o.split(':').next() != Some(name));
            conf.options.push(rendered);
        }
    }
    conf.nameservers.dedup();
    conf.nameservers.truncate(MAX_NAMESERVERS);
    let mut seen = std::collections::HashSet::new();
    conf.searches.retain(|s| seen.insert(s.clone()));
    conf.searches.truncate(MAX_SEARCHES);
    while conf.searches.join(" ").len() > MAX_SEARCH_LINE {
        conf.searches.pop();
    }
    conf
}

/// The pod's hostname: `spec.hostname` or the pod's name, cut to 63 characters (and
/// never ending in `-` or `.` after the cut), as the kubelet does.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .or(pod.metadata.name.as_deref())
        .unwrap_or_default();
    let mut cut: String = name.chars().take(63).collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    cut
}

/// The kubelet-managed `/etc/hosts` of a pod with address `ip`.
pub fn hosts(pod: &Pod, ip: IpAddr, cluster: &ClusterDns) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let spec = pod.spec.as_ref();
    match spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            out.push_str(&format!(
                "{ip}\t{host}.{subdomain}.{namespace}.svc.{}\t{host}\n",
                cluster.domain
            ));
        }
        None => out.push_str(&format!("{ip}\t{host}\n")),
    }
    let aliases = spec
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    out
}

/// How `kubesim pause` sets a sandbox up.
#[derive(Debug, Clone)]
pub struct PauseArgs<'a> {
    /// The pod's network namespace; none for a host-network pod.
    pub netns: Option<&'a Path>,
    /// The pod's hostname, in a UTS namespace of its own; none shares the node's.
    pub hostname: Option<&'a str>,
    /// The directory with the files shown as `/etc/<name>`.
    pub etc: &'a Path,
    /// The directory shown at [`SERVICE_ACCOUNT_PATH`] (token, ca.crt, namespace).
    pub service_account: Option<&'a Path>,
}

/// Where pods find their service account's credentials, as in-cluster clients read them.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The pause process: enters the pod's network namespace, makes the UTS and mount
/// namespaces, covers `/etc` files, then sleeps until SIGTERM or SIGINT and returns
/// the exit code. Must run before the process starts any thread.
pub fn pause(args: &PauseArgs) -> io::Result<i32> {
    if let Some(netns) = args.netns {
        setns(File::open(netns)?, CloneFlags::CLONE_NEWNET)?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS;
    if args.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags)?;
    if let Some(name) = args.hostname {
        sethostname(name)?;
    }
    // Nothing mounted here may reach the node's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    for name in ETC_FILES {
        let source = args.etc.join(name);
        if source.exists() {
            mount(
                Some(&source),
                &Path::new("/etc").join(name),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
    }
    if let Some(dir) = args.service_account {
        // The mount point is an empty directory; the credentials exist only in here.
        std::fs::create_dir_all(SERVICE_ACCOUNT_PATH)?;
        mount(
            Some(dir),
            SERVICE_ACCOUNT_PATH,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    // The kubelet waits for this line before it puts containers into the sandbox.
    let mut stdout = io::stdout();
    stdout.write_all(READY)?;
    stdout.flush()?;
    signals.wait()?;
    Ok(0)
}

/// Enters the namespaces (network, UTS, mount) of the sandbox process `target`, then
/// changes to `workdir` and runs `argv`; returns only when that fails. Must run before
/// the process starts any thread.
pub fn nsenter(target: Pid, workdir: Option<&Path>, argv: &[String]) -> io::Error {
    let enter = || -> io::Result<()> {
        let ns = |kind: &str| File::open(format!("/proc/{target}/ns/{kind}"));
        let (net, uts, mnt) = (ns("net")?, ns("uts")?, ns("mnt")?);
        setns(net, CloneFlags::CLONE_NEWNET)?;
        setns(uts, CloneFlags::CLONE_NEWUTS)?;
        setns(mnt, CloneFlags::CLONE_NEWNS)?;
        chdir(workdir.unwrap_or(Path::new("/")))?;
        Ok(())
    };
    if let Err(err) = enter() {
        return err;
    }
    exec(argv)
}

/// Replaces the process with `argv` (looked up on `PATH`); returns only when that
/// fails.
pub fn exec(argv: &[String]) -> io::Error {
    let Some(program) = argv.first() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "no command to run");
    };
    let cstrings: Result<Vec<std::ffi::CString>, _> = argv
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect();
    let (Ok(program), Ok(args)) = (std::ffi::CString::new(program.as_bytes()), cstrings) else {
        return io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte");
    };
    match execvp(&program, &args) {
        Ok(never) => match never {},
        Err(errno) => errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: "10.96.0.10".parse().expect("ip"),
            domain: "cluster.local".into(),
        }
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn node() -> ResolvConf {
        ResolvConf::parse("# host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
    }

    #[test]
    fn cluster_first_points_at_cluster_dns_with_the_search_path() {
        let conf = resolv_conf(&pod(PodSpec::default()), &cluster(), &node());
        assert_eq!(
            conf.render(),
            "nameserver 10.96.0.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn default_policy_and_host_network_use_the_node_file() {
        let default = pod(PodSpec {
            dns_policy: Some("Default".into()),
            ..Default::default()
        });
        assert_eq!(resolv_conf(&default, &cluster(), &node()), node());
        let host = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(resolv_conf(&host, &cluster(), &node()), node());
        let with_host_net = pod(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&with_host_net, &cluster(), &node()).nameservers,
            ["10.96.0.10"]
        );
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let dns_config = PodDNSConfig {
            nameservers: Some(vec!["1.2.3.4".into()]),
            searches: Some(vec!["ns1.svc.cluster-domain.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let none = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(dns_config.clone()),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&none, &cluster(), &node()).render(),
            "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example\noptions ndots:2 edns0\n"
        );
        let merged = pod(PodSpec {
            dns_config: Some(dns_config),
            ..Default::default()
        });
        let conf = resolv_conf(&merged, &cluster(), &node());
        assert_eq!(conf.nameservers, ["10.96.0.10", "1.2.3.4"]);
        assert_eq!(conf.options, ["ndots:2", "edns0"]);
        assert_eq!(
            conf.searches.last().map(String::as_str),
            Some("ns1.svc.cluster-domain.example")
        );
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let plain = pod(PodSpec::default());
        let ip: IpAddr = "10.244.1.7".parse().expect("ip");
        let text = hosts(&plain, ip, &cluster());
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.244.1.7\tweb-0\n"), "{text}");
        let sub = pod(PodSpec {
            hostname: Some("db".into()),
            subdomain: Some("backend".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            }]),
            ..Default::default()
        });
        let text = hosts(&sub, ip, &cluster());
        assert!(text.contains("10.244.1.7\tdb.backend.shop.svc.cluster.local\tdb\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"));
    }

    #[test]
    fn hostnames_are_cut_to_63_characters() {
        let long = Pod {
            metadata: ObjectMeta {
                name: Some(format!("{}-{}", "a".repeat(62), "b")),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(hostname(&long), "a".repeat(62));
    }
}
