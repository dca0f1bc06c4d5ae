//! Objects built with k8s-pb and encoded by prost, an encoder independent of this module.
//! prost writes only the fields that are set, so these also check that unset Go values
//! come out as Go's zero values (`"status": {}`, `"resources": {}`, `"eventTime": null`).
//! The expected JSON follows Go's rules field by field, in Go declaration order.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::autoscaling::v1 as autoscaling;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::discovery::v1 as discovery;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::{check, decode, envelope};
use crate::proto::{decode_object, ProtoError};

fn body<T: prost::Message + k8s_pb::Resource>(obj: &T) -> Vec<u8> {
    envelope(T::API_VERSION, T::KIND, obj.encode_to_vec())
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn object_meta(name: &str, namespace: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s(namespace),
        ..Default::default()
    })
}

fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn quantities<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity { string: s(v) }))
        .collect()
}

fn int(value: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(value),
        str_val: None,
    })
}

fn string(value: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: None,
        str_val: s(value),
    })
}

/// 2024-01-02T03:04:05Z.
const T0: i64 = 1_704_164_645;

#[test]
fn namespace_with_labels_and_finalizers() {
    let ns = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: s("demo"),
            labels: strings([("team", "a"), ("env", "dev")]),
            ..Default::default()
        }),
        spec: Some(core::NamespaceSpec {
            finalizers: vec!["kubernetes".into()],
        }),
        status: None,
    };
    let expected = json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "demo", "labels": {"env": "dev", "team": "a"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {}
    });
    check(&decode(&body(&ns)), &expected);
}

#[test]
fn configmap_with_data_binary_data_and_immutable() {
    let cm = core::ConfigMap {
        metadata: object_meta("cfg", "default"),
        immutable: Some(true),
        data: strings([("a", "1"), ("b", "two")]),
        binary_data: BTreeMap::from([("bin".to_owned(), vec![0, 1, 2, 255])]),
    };
    let expected = json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cfg", "namespace": "default"},
        "immutable": true,
        "data": {"a": "1", "b": "two"},
        "binaryData": {"bin": "AAEC/w=="}
    });
    check(&decode(&body(&cm)), &expected);
}

#[test]
fn service_ports_with_int_and_string_target_ports() {
    let svc = core::Service {
        metadata: object_meta("web", "default"),
        spec: Some(core::ServiceSpec {
            ports: vec![
                core::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: int(8080),
                    ..Default::default()
                },
                core::ServicePort {
                    name: s("metrics"),
                    app_protocol: s("http"),
                    port: Some(9090),
                    target_port: string("metrics"),
                    ..Default::default()
                },
                core::ServicePort {
                    name: s("dns"),
                    protocol: s("UDP"),
                    port: Some(53),
                    ..Default::default()
                },
            ],
            selector: strings([("app", "web")]),
            cluster_ip: s("10.96.0.10"),
            cluster_ips: vec!["10.96.0.10".into()],
            r#type: s("ClusterIP"),
            session_affinity: s("None"),
            ip_families: vec!["IPv4".into()],
            ip_family_policy: s("SingleStack"),
            internal_traffic_policy: s("Cluster"),
            ..Default::default()
        }),
        status: None,
    };
    let expected = json!({
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "metrics", "appProtocol": "http", "port": 9090, "targetPort": "metrics"},
                {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 0}
            ],
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    });
    check(&decode(&body(&svc)), &expected);
}

fn web_container() -> core::Container {
    core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        args: vec!["--port".into(), "8080".into()],
        ports: vec![core::ContainerPort {
            name: s("http"),
            container_port: Some(8080),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: vec![
            core::EnvVar {
                name: s("MODE"),
                value: s("prod"),
                value_from: None,
            },
            core::EnvVar {
                name: s("POD_IP"),
                value: None,
                value_from: Some(core::EnvVarSource {
                    field_ref: Some(core::ObjectFieldSelector {
                        api_version: None,
                        field_path: s("status.podIP"),
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::ResourceRequirements {
            limits: quantities([("cpu", "500m"), ("memory", "128Mi")]),
            requests: quantities([("cpu", "250m")]),
            claims: vec![],
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("data"),
            read_only: Some(true),
            mount_path: s("/data"),
            ..Default::default()
        }],
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction {
                    port: int(8080),
                    host: None,
                }),
                ..Default::default()
            }),
            initial_delay_seconds: Some(3),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: string("http"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        image_pull_policy: s("IfNotPresent"),
        ..Default::default()
    }
}

#[test]
fn deployment_with_pod_template() {
    let deploy = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            namespace: s("prod"),
            labels: strings([("app", "web")]),
            annotations: strings([("deployment.kubernetes.io/revision", "1")]),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(3),
            selector: Some(meta::LabelSelector {
                match_labels: strings([("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["frontend".into(), "edge".into()],
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: strings([("app", "web"), ("tier", "frontend")]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    volumes: vec![
                        core::Volume {
                            name: s("data"),
                            volume_source: Some(core::VolumeSource {
                                empty_dir: Some(core::EmptyDirVolumeSource {
                                    medium: None,
                                    size_limit: Some(Quantity { string: s("1Gi") }),
                                }),
                                ..Default::default()
                            }),
                        },
                        core::Volume {
                            name: s("cfg"),
                            volume_source: Some(core::VolumeSource {
                                config_map: Some(core::ConfigMapVolumeSource {
                                    local_object_reference: Some(core::LocalObjectReference {
                                        name: s("web-config"),
                                    }),
                                    default_mode: Some(0o644),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                        },
                    ],
                    containers: vec![web_container()],
                    termination_grace_period_seconds: Some(30),
                    node_selector: strings([("kubernetes.io/os", "linux")]),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: string("25%"),
                }),
            }),
            revision_history_limit: Some(10),
            ..Default::default()
        }),
        status: None,
    };
    let expected = json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "labels": {"app": "web"},
            "annotations": {"deployment.kubernetes.io/revision": "1"}
        },
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "edge"]}]
            },
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "frontend"}},
                "spec": {
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "cfg", "configMap": {"name": "web-config", "defaultMode": 420}}
                    ],
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "args": ["--port", "8080"],
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                        ],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                        "volumeMounts": [{"name": "data", "readOnly": true, "mountPath": "/data"}],
                        "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3},
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "terminationGracePeriodSeconds": 30,
                    "nodeSelector": {"kubernetes.io/os": "linux"}
                }
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "revisionHistoryLimit": 10
        },
        "status": {}
    });
    check(&decode(&body(&deploy)), &expected);
}

#[test]
fn replicaset_without_selector_writes_null_like_go() {
    let rs = apps::ReplicaSet {
        metadata: object_meta("web-1", "default"),
        spec: None,
        status: None,
    };
    let expected = json!({
        "kind": "ReplicaSet",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"selector": null, "template": {"metadata": {}, "spec": {"containers": null}}},
        "status": {"replicas": 0}
    });
    check(&decode(&body(&rs)), &expected);
}

#[test]
fn secret_bytes_are_base64() {
    let secret = core::Secret {
        metadata: object_meta("creds", "default"),
        immutable: None,
        data: BTreeMap::from([
            ("password".to_owned(), b"s3cr3t".to_vec()),
            ("blob".to_owned(), vec![0, 255, 1]),
        ]),
        string_data: strings([("user", "admin")]),
        r#type: s("Opaque"),
    };
    let expected = json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"blob": "AP8B", "password": "czNjcjN0"},
        "stringData": {"user": "admin"},
        "type": "Opaque"
    });
    check(&decode(&body(&secret)), &expected);
}

fn delete_options() -> meta::DeleteOptions {
    meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: s("42"),
        }),
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    }
}

#[test]
fn delete_options_keep_an_explicit_zero_grace_period() {
    let expected = json!({
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "42"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"]
    });
    check(
        &decode(&envelope(
            "v1",
            "DeleteOptions",
            delete_options().encode_to_vec(),
        )),
        &expected,
    );
}

#[test]
fn delete_options_of_any_served_group_version() {
    for api_version in [
        "meta.k8s.io/v1",
        "apps/v1",
        "networking.k8s.io/v1",
        "discovery.k8s.io/v1",
        "autoscaling/v1",
    ] {
        let got = decode(&envelope(
            api_version,
            "DeleteOptions",
            delete_options().encode_to_vec(),
        ));
        assert_eq!(got["apiVersion"], api_version);
        assert_eq!(got["propagationPolicy"], "Foreground");
    }
    assert_eq!(
        decode_object(&envelope(
            "batch/v1",
            "DeleteOptions",
            delete_options().encode_to_vec()
        )),
        Err(ProtoError::UnknownKind {
            api_version: "batch/v1".into(),
            kind: "DeleteOptions".into()
        })
    );
}

#[test]
fn event_times_and_micro_times() {
    let event = core::Event {
        metadata: object_meta("web.17a", "default"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            namespace: s("default"),
            name: s("web"),
            uid: s("u-1"),
            api_version: s("v1"),
            field_path: s("spec.containers{web}"),
            ..Default::default()
        }),
        reason: s("Pulled"),
        message: s("pulled"),
        source: Some(core::EventSource {
            component: s("kubelet"),
            host: s("node-1"),
        }),
        // Time keeps whole seconds only, as apimachinery's unmarshaller does.
        first_timestamp: Some(meta::Time {
            seconds: Some(T0),
            nanos: Some(999),
        }),
        last_timestamp: Some(meta::Time {
            seconds: Some(T0 + 60),
            nanos: None,
        }),
        count: Some(2),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime {
            seconds: Some(T0),
            nanos: Some(123_456_789),
        }),
        series: Some(core::EventSeries {
            count: Some(2),
            last_observed_time: Some(meta::MicroTime {
                seconds: Some(T0 + 1),
                nanos: Some(1_500),
            }),
        }),
        reporting_component: s("kubelet"),
        reporting_instance: s("node-1"),
        ..Default::default()
    };
    let expected = json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": "web.17a", "namespace": "default"},
        "involvedObject": {
            "kind": "Pod",
            "namespace": "default",
            "name": "web",
            "uid": "u-1",
            "apiVersion": "v1",
            "fieldPath": "spec.containers{web}"
        },
        "reason": "Pulled",
        "message": "pulled",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2024-01-02T03:04:05Z",
        "lastTimestamp": "2024-01-02T03:05:05Z",
        "count": 2,
        "type": "Normal",
        "eventTime": "2024-01-02T03:04:05.123456Z",
        "series": {"count": 2, "lastObservedTime": "2024-01-02T03:04:06.000001Z"},
        "reportingComponent": "kubelet",
        "reportingInstance": "node-1"
    });
    check(&decode(&body(&event)), &expected);
}

#[test]
fn minimal_event_shows_go_zero_values() {
    let event = core::Event {
        metadata: object_meta("e", "default"),
        ..Default::default()
    };
    let expected = json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {},
        "source": {},
        "firstTimestamp": null,
        "lastTimestamp": null,
        "eventTime": null,
        "reportingComponent": "",
        "reportingInstance": ""
    });
    check(&decode(&body(&event)), &expected);
}

#[test]
fn endpointslice_pointers_and_required_lists() {
    let slice = discovery::EndpointSlice {
        metadata: Some(meta::ObjectMeta {
            name: s("web-abc"),
            namespace: s("default"),
            labels: strings([("kubernetes.io/service-name", "web")]),
            ..Default::default()
        }),
        address_type: s("IPv4"),
        endpoints: vec![discovery::Endpoint {
            addresses: vec!["10.244.1.5".into()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            target_ref: Some(core::ObjectReference {
                kind: s("Pod"),
                namespace: s("default"),
                name: s("web-1"),
                ..Default::default()
            }),
            node_name: s("node-1"),
            ..Default::default()
        }],
        ports: vec![discovery::EndpointPort {
            name: s("http"),
            protocol: s("TCP"),
            port: Some(8080),
            app_protocol: None,
        }],
    };
    let expected = json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["10.244.1.5"],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"},
            "nodeName": "node-1"
        }],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]
    });
    check(&decode(&body(&slice)), &expected);

    let empty = discovery::EndpointSlice {
        metadata: object_meta("e", "default"),
        address_type: s("IPv4"),
        ..Default::default()
    };
    let expected = json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "e", "namespace": "default"},
        "addressType": "IPv4",
        "endpoints": null,
        "ports": null
    });
    check(&decode(&body(&empty)), &expected);
}

#[test]
fn scale_omits_zero_spec_replicas_but_not_status_replicas() {
    let scale = autoscaling::Scale {
        metadata: object_meta("web", "default"),
        spec: Some(autoscaling::ScaleSpec { replicas: Some(0) }),
        status: Some(autoscaling::ScaleStatus {
            replicas: Some(0),
            selector: s("app=web"),
        }),
    };
    let expected = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {},
        "status": {"replicas": 0, "selector": "app=web"}
    });
    check(
        &decode(&envelope("autoscaling/v1", "Scale", scale.encode_to_vec())),
        &expected,
    );
}

#[test]
fn binding_target() {
    let binding = core::Binding {
        metadata: object_meta("web-1", "default"),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            name: s("node-1"),
            api_version: s("v1"),
            ..Default::default()
        }),
    };
    let expected = json!({
        "kind": "Binding",
        "apiVersion": "v1",
        "metadata": {"name": "web-1", "namespace": "default"},
        "target": {"kind": "Node", "name": "node-1", "apiVersion": "v1"}
    });
    check(&decode(&body(&binding)), &expected);
}

#[test]
fn node_status_quantities_conditions_and_nested_values() {
    let node = core::Node {
        metadata: Some(meta::ObjectMeta {
            name: s("node-1"),
            ..Default::default()
        }),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.244.1.0/24"),
            pod_cid_rs: vec!["10.244.1.0/24".into()],
            taints: vec![core::Taint {
                key: s("node-role.kubernetes.io/control-plane"),
                value: None,
                effect: s("NoSchedule"),
                time_added: Some(meta::Time {
                    seconds: Some(T0),
                    nanos: None,
                }),
            }],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: quantities([("cpu", "2"), ("memory", "4Gi"), ("pods", "110")]),
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: Some(meta::Time {
                    seconds: Some(T0),
                    nanos: None,
                }),
                reason: s("KubeletReady"),
                ..Default::default()
            }],
            addresses: vec![core::NodeAddress {
                r#type: s("InternalIP"),
                address: s("10.0.0.1"),
            }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10250) }),
            }),
            node_info: Some(core::NodeSystemInfo {
                kubelet_version: s("v1.33.0"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let got = decode(&body(&node));
    check(
        &got["spec"],
        &json!({
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24"],
            "taints": [{
                "key": "node-role.kubernetes.io/control-plane",
                "effect": "NoSchedule",
                "timeAdded": "2024-01-02T03:04:05Z"
            }]
        }),
    );
    let status = &got["status"];
    check(
        &status["capacity"],
        &json!({"cpu": "2", "memory": "4Gi", "pods": "110"}),
    );
    check(
        &status["conditions"],
        &json!([{
            "type": "Ready",
            "status": "True",
            "lastHeartbeatTime": "2024-01-02T03:04:05Z",
            "lastTransitionTime": null,
            "reason": "KubeletReady"
        }]),
    );
    check(
        &status["addresses"],
        &json!([{"type": "InternalIP", "address": "10.0.0.1"}]),
    );
    check(
        &status["daemonEndpoints"],
        &json!({"kubeletEndpoint": {"Port": 10250}}),
    );
    assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1.33.0");
    assert_eq!(
        status["nodeInfo"]["machineID"], "",
        "required Go strings are written empty"
    );
}

#[test]
fn pod_metadata_owner_references_and_managed_fields() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("web-1"),
            namespace: s("default"),
            uid: s("u-1"),
            resource_version: s("7"),
            generation: Some(2),
            creation_timestamp: Some(meta::Time {
                seconds: Some(T0),
                nanos: None,
            }),
            deletion_grace_period_seconds: Some(30),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web"),
                uid: s("u-2"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            finalizers: vec!["example.com/hold".into()],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Apply"),
                api_version: s("v1"),
                time: Some(meta::Time {
                    seconds: Some(T0),
                    nanos: None,
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()),
                }),
                subresource: None,
            }],
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                image: s("busybox"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&body(&pod));
    check(
        &got["metadata"],
        &json!({
            "name": "web-1",
            "namespace": "default",
            "uid": "u-1",
            "resourceVersion": "7",
            "generation": 2,
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "deletionGracePeriodSeconds": 30,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web",
                "uid": "u-2",
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "finalizers": ["example.com/hold"],
            "managedFields": [{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": "2024-01-02T03:04:05Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {}}}
            }]
        }),
    );
    check(
        &got["spec"],
        &json!({"containers": [{"name": "c", "image": "busybox", "resources": {}}]}),
    );
    check(&got["status"], &json!({}));
}

#[test]
fn negative_int32_survives_its_ten_byte_varint() {
    let scale = autoscaling::Scale {
        metadata: object_meta("web", "default"),
        spec: Some(autoscaling::ScaleSpec { replicas: Some(-1) }),
        status: None,
    };
    let got = decode(&envelope("autoscaling/v1", "Scale", scale.encode_to_vec()));
    assert_eq!(got["spec"]["replicas"], -1);
}
