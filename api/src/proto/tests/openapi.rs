//! The OpenAPI v2 encoding, decoded back with prost messages declared here after
//! gnostic-models `openapiv2/OpenAPIv2.proto` (only the fields the checks read), and
//! read the way kubectl reads it: paths, operations, parameters, responses, vendor
//! extensions parsed from their YAML text, and definitions.

use prost::Message as _;
use serde_json::{json, Value};

use crate::proto::{encode_openapi_v2, ProtoError};

#[derive(Clone, PartialEq, prost::Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
    #[prost(message, optional, tag = "10")]
    parameters: Option<ParameterDefinitions>,
    #[prost(message, repeated, tag = "12")]
    security: Vec<SecurityRequirement>,
    #[prost(message, optional, tag = "13")]
    security_definitions: Option<SecurityDefinitions>,
    #[prost(message, repeated, tag = "16")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Paths {
    #[prost(message, repeated, tag = "1")]
    vendor_extension: Vec<NamedAny>,
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    post: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Operation {
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(string, repeated, tag = "6")]
    produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ParametersItem {
    #[prost(oneof = "ParametersItemOneof", tags = "1, 2")]
    oneof: Option<ParametersItemOneof>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ParametersItemOneof {
    #[prost(message, tag = "1")]
    Parameter(Parameter),
    #[prost(message, tag = "2")]
    JsonReference(JsonReference),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Parameter {
    #[prost(oneof = "ParameterOneof", tags = "1, 2")]
    oneof: Option<ParameterOneof>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ParameterOneof {
    #[prost(message, tag = "1")]
    Body(Box<BodyParameter>),
    #[prost(message, tag = "2")]
    NonBody(Box<NonBodyParameter>),
}

#[derive(Clone, PartialEq, prost::Message)]
struct BodyParameter {
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    r#in: String,
    #[prost(bool, tag = "4")]
    required: bool,
    #[prost(message, optional, tag = "5")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonBodyParameter {
    #[prost(oneof = "NonBodyOneof", tags = "3, 4")]
    oneof: Option<NonBodyOneof>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum NonBodyOneof {
    #[prost(message, tag = "3")]
    Query(QueryParameter),
    #[prost(message, tag = "4")]
    Path(PathParameter),
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryParameter {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
    #[prost(message, optional, tag = "10")]
    default: Option<Any>,
    #[prost(double, tag = "11")]
    maximum: f64,
    #[prost(int64, tag = "16")]
    min_length: i64,
    #[prost(bool, tag = "20")]
    unique_items: bool,
    #[prost(message, repeated, tag = "21")]
    r#enum: Vec<Any>,
    #[prost(message, repeated, tag = "23")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PathParameter {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "5")]
    r#type: String,
    #[prost(bool, tag = "19")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct JsonReference {
    #[prost(string, tag = "1")]
    xref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Responses {
    #[prost(message, repeated, tag = "1")]
    response_code: Vec<NamedResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedResponseValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<ResponseValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    response: Option<Response>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Response {
    #[prost(string, tag = "1")]
    description: String,
    #[prost(message, optional, tag = "2")]
    schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Schema {
    #[prost(string, tag = "1")]
    xref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(message, optional, tag = "5")]
    default: Option<Any>,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    r#enum: Vec<Any>,
    #[prost(message, optional, tag = "21")]
    additional_properties: Option<AdditionalPropertiesItem>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AdditionalPropertiesItem {
    #[prost(oneof = "AdditionalPropertiesOneof", tags = "1, 2")]
    oneof: Option<AdditionalPropertiesOneof>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum AdditionalPropertiesOneof {
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ParameterDefinitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedParameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedParameter {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Parameter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SecurityRequirement {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedStringArray>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedStringArray {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<StringArray>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StringArray {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SecurityDefinitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedSecurityDefinitionsItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<SecurityDefinitionsItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SecurityDefinitionsItem {
    #[prost(message, optional, tag = "2")]
    api_key_security: Option<ApiKeySecurity>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ApiKeySecurity {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    r#in: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

/// A vendor extension's or example's value, read back from its YAML text.
fn yaml(any: &Option<Any>) -> Value {
    serde_json::from_str(&any.as_ref().expect("value").yaml).expect("JSON text")
}

fn extensions(list: &[NamedAny]) -> Vec<(String, Value)> {
    list.iter()
        .map(|e| (e.name.clone(), yaml(&e.value)))
        .collect()
}

fn query(item: &ParametersItem) -> &QueryParameter {
    match &item.oneof {
        Some(ParametersItemOneof::Parameter(Parameter {
            oneof: Some(ParameterOneof::NonBody(p)),
        })) => match &p.oneof {
            Some(NonBodyOneof::Query(q)) => q,
            other => panic!("not a query parameter: {other:?}"),
        },
        other => panic!("not a non-body parameter: {other:?}"),
    }
}

fn sample() -> Value {
    let pod_gvk = json!({"group": "", "kind": "Pod", "version": "v1"});
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {
            "/api/v1/namespaces/{namespace}/pods": {
                "get": {
                    "operationId": "listCoreV1NamespacedPod",
                    "consumes": ["*/*"],
                    "produces": ["application/json", "application/vnd.kubernetes.protobuf"],
                    "schemes": ["https"],
                    "parameters": [
                        {"name": "limit", "in": "query", "type": "integer", "uniqueItems": true,
                         "description": "limit is a maximum number of responses to return for a list call."},
                        {"name": "watch", "in": "query", "type": "boolean", "default": false}
                    ],
                    "responses": {
                        "200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.api.core.v1.PodList"}},
                        "401": {"description": "Unauthorized"}
                    },
                    "x-kubernetes-action": "list",
                    "x-kubernetes-group-version-kind": pod_gvk
                },
                "post": {
                    "operationId": "createCoreV1NamespacedPod",
                    "parameters": [
                        {"name": "body", "in": "body", "required": true,
                         "schema": {"$ref": "#/definitions/io.k8s.api.core.v1.Pod"}},
                        {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true,
                         "enum": ["Ignore", "Warn", "Strict"]}
                    ],
                    "responses": {"201": {"description": "Created"}},
                    "x-kubernetes-action": "post",
                    "x-kubernetes-group-version-kind": pod_gvk
                },
                "parameters": [
                    {"$ref": "#/parameters/namespace-vgWSWtn3"},
                    {"name": "pretty", "in": "query", "type": "string", "minLength": 1, "maximum": 2.5}
                ]
            },
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {
                "patch": {
                    "operationId": "patchAppsV1NamespacedDeployment",
                    "consumes": ["application/json-patch+json", "application/merge-patch+json",
                                 "application/strategic-merge-patch+json", "application/apply-patch+yaml"],
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true},
                        {"name": "force", "in": "query", "type": "boolean", "uniqueItems": true}
                    ],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": "apps", "kind": "Deployment", "version": "v1"}
                }
            },
            "x-paths-note": "kept"
        },
        "definitions": {
            "io.k8s.api.apps.v1.DeploymentSpec": {
                "description": "DeploymentSpec is the specification of the desired behavior of the Deployment.",
                "type": "object",
                "required": ["selector", "template"],
                "properties": {
                    "replicas": {"type": "integer", "format": "int32"},
                    "selector": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},
                    "strategy": {
                        "allOf": [{"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"}],
                        "x-kubernetes-patch-strategy": "retainKeys"
                    }
                }
            },
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "properties": {
                    "containers": {
                        "type": "array",
                        "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"},
                        "x-kubernetes-list-map-keys": ["name"],
                        "x-kubernetes-patch-merge-key": "name"
                    },
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string", "default": ""}},
                    "restartPolicy": {"type": "string", "enum": ["Always", "Never", "OnFailure"]}
                }
            },
            "io.k8s.api.apps.v1.Deployment": {
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}]
            },
            "io.k8s.apimachinery.pkg.runtime.RawExtension": {"type": "object", "additionalProperties": false},
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["integer", "string"], "format": "int-or-string"}
        },
        "parameters": {
            "namespace-vgWSWtn3": {"name": "namespace", "in": "path", "required": true, "type": "string",
                                   "uniqueItems": true, "description": "object name and auth scope"}
        },
        "securityDefinitions": {
            "BearerToken": {"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}
        },
        "security": [{"BearerToken": []}],
        "x-generator": {"name": "kubesim"}
    })
}

#[test]
fn document_paths_operations_parameters_and_extensions_survive() {
    let bytes = encode_openapi_v2(&sample()).unwrap();
    let doc = Document::decode(bytes.as_slice()).unwrap();
    assert_eq!(doc.swagger, "2.0");
    assert_eq!(
        doc.info,
        Some(Info {
            title: "Kubernetes".into(),
            version: "v1.33.0".into()
        })
    );
    assert_eq!(
        extensions(&doc.vendor_extension),
        [("x-generator".into(), json!({"name": "kubesim"}))]
    );

    let paths = doc.paths.unwrap();
    assert_eq!(
        extensions(&paths.vendor_extension),
        [("x-paths-note".into(), json!("kept"))]
    );
    let names: Vec<&str> = paths.path.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "/api/v1/namespaces/{namespace}/pods",
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        ]
    );

    let pods = paths.path[0].value.as_ref().unwrap();
    assert_eq!(
        pods.parameters[0].oneof,
        Some(ParametersItemOneof::JsonReference(JsonReference {
            xref: "#/parameters/namespace-vgWSWtn3".into()
        }))
    );
    let pretty = query(&pods.parameters[1]);
    assert_eq!(
        (
            pretty.name.as_str(),
            pretty.r#in.as_str(),
            pretty.r#type.as_str()
        ),
        ("pretty", "query", "string")
    );
    assert_eq!((pretty.min_length, pretty.maximum), (1, 2.5));

    let list = pods.get.as_ref().unwrap();
    assert_eq!(list.operation_id, "listCoreV1NamespacedPod");
    assert_eq!(list.consumes, ["*/*"]);
    assert_eq!(
        list.produces,
        ["application/json", "application/vnd.kubernetes.protobuf"]
    );
    assert_eq!(list.schemes, ["https"]);
    let limit = query(&list.parameters[0]);
    assert_eq!(limit.name, "limit");
    assert_eq!(limit.r#type, "integer");
    assert!(limit.unique_items && !limit.required);
    assert_eq!(
        limit.description,
        "limit is a maximum number of responses to return for a list call."
    );
    assert_eq!(yaml(&query(&list.parameters[1]).default), json!(false));
    assert_eq!(
        extensions(&list.vendor_extension),
        [
            ("x-kubernetes-action".into(), json!("list")),
            (
                "x-kubernetes-group-version-kind".into(),
                json!({"group": "", "kind": "Pod", "version": "v1"})
            )
        ]
    );
    let responses = &list.responses.as_ref().unwrap().response_code;
    assert_eq!(
        responses
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["200", "401"]
    );
    let ok = responses[0]
        .value
        .as_ref()
        .unwrap()
        .response
        .as_ref()
        .unwrap();
    assert_eq!(ok.description, "OK");
    assert_eq!(
        ok.schema.as_ref().unwrap().schema.as_ref().unwrap().xref,
        "#/definitions/io.k8s.api.core.v1.PodList"
    );

    let create = pods.post.as_ref().unwrap();
    let Some(ParametersItemOneof::Parameter(Parameter {
        oneof: Some(ParameterOneof::Body(body)),
    })) = &create.parameters[0].oneof
    else {
        panic!("not a body parameter: {:?}", create.parameters[0]);
    };
    assert_eq!(
        (body.name.as_str(), body.r#in.as_str(), body.required),
        ("body", "body", true)
    );
    assert_eq!(
        body.schema.as_ref().unwrap().xref,
        "#/definitions/io.k8s.api.core.v1.Pod"
    );
    let validation = query(&create.parameters[1]);
    assert_eq!(validation.name, "fieldValidation");
    assert_eq!(
        validation
            .r#enum
            .iter()
            .map(|a| yaml(&Some(a.clone())))
            .collect::<Vec<_>>(),
        [json!("Ignore"), json!("Warn"), json!("Strict")]
    );

    let patch = paths.path[1]
        .value
        .as_ref()
        .unwrap()
        .patch
        .as_ref()
        .unwrap();
    assert_eq!(patch.operation_id, "patchAppsV1NamespacedDeployment");
    assert_eq!(patch.consumes.len(), 4);
    let params: Vec<&str> = patch
        .parameters
        .iter()
        .map(|p| query(p).name.as_str())
        .collect();
    assert_eq!(params, ["fieldValidation", "force"]);
    assert_eq!(
        extensions(&patch.vendor_extension)[1],
        (
            "x-kubernetes-group-version-kind".into(),
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        )
    );
}

#[test]
fn definitions_schemas_survive() {
    let doc = Document::decode(encode_openapi_v2(&sample()).unwrap().as_slice()).unwrap();
    let defs = doc.definitions.unwrap().additional_properties;
    let def = |name: &str| {
        defs.iter()
            .find(|d| d.name == name)
            .and_then(|d| d.value.clone())
            .unwrap()
    };
    let prop = |schema: &Schema, name: &str| {
        let props = &schema.properties.as_ref().unwrap().additional_properties;
        props
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.clone())
            .unwrap()
    };
    let types = |schema: &Schema| {
        schema
            .r#type
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default()
    };

    let spec = def("io.k8s.api.apps.v1.DeploymentSpec");
    assert_eq!(
        spec.description,
        "DeploymentSpec is the specification of the desired behavior of the Deployment."
    );
    assert_eq!(types(&spec), ["object"]);
    assert_eq!(spec.required, ["selector", "template"]);
    let replicas = prop(&spec, "replicas");
    assert_eq!(
        (types(&replicas), replicas.format.as_str()),
        (vec!["integer".to_owned()], "int32")
    );
    assert_eq!(
        prop(&spec, "selector").xref,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
    );
    let strategy = prop(&spec, "strategy");
    assert_eq!(
        strategy.all_of[0].xref,
        "#/definitions/io.k8s.api.apps.v1.DeploymentStrategy"
    );
    assert_eq!(
        extensions(&strategy.vendor_extension),
        [("x-kubernetes-patch-strategy".into(), json!("retainKeys"))]
    );

    let pod_spec = def("io.k8s.api.core.v1.PodSpec");
    let containers = prop(&pod_spec, "containers");
    assert_eq!(types(&containers), ["array"]);
    assert_eq!(
        containers.items.as_ref().unwrap().schema[0].xref,
        "#/definitions/io.k8s.api.core.v1.Container"
    );
    assert_eq!(
        extensions(&containers.vendor_extension),
        [
            ("x-kubernetes-list-map-keys".into(), json!(["name"])),
            ("x-kubernetes-patch-merge-key".into(), json!("name"))
        ]
    );
    let node_selector = prop(&pod_spec, "nodeSelector");
    let Some(AdditionalPropertiesOneof::Schema(values)) =
        node_selector.additional_properties.unwrap().oneof
    else {
        panic!("additionalProperties is not a schema");
    };
    assert_eq!(types(&values), ["string"]);
    assert_eq!(yaml(&values.default), json!(""));
    let restart = prop(&pod_spec, "restartPolicy");
    assert_eq!(restart.r#enum.len(), 3);

    let deployment = def("io.k8s.api.apps.v1.Deployment");
    assert_eq!(
        extensions(&deployment.vendor_extension),
        [(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        )]
    );
    let raw = def("io.k8s.apimachinery.pkg.runtime.RawExtension");
    assert_eq!(
        raw.additional_properties.unwrap().oneof,
        Some(AdditionalPropertiesOneof::Boolean(false))
    );
    assert_eq!(
        types(&def("io.k8s.apimachinery.pkg.util.intstr.IntOrString")),
        ["integer", "string"]
    );
}

#[test]
fn global_parameters_and_security_survive() {
    let doc = Document::decode(encode_openapi_v2(&sample()).unwrap().as_slice()).unwrap();
    let params = doc.parameters.unwrap().additional_properties;
    assert_eq!(params[0].name, "namespace-vgWSWtn3");
    let Some(ParameterOneof::NonBody(non_body)) =
        params[0].value.as_ref().and_then(|p| p.oneof.clone())
    else {
        panic!("not a non-body parameter: {:?}", params[0]);
    };
    let Some(NonBodyOneof::Path(path)) = non_body.oneof else {
        panic!("not a path parameter: {non_body:?}");
    };
    assert_eq!(
        path,
        PathParameter {
            required: true,
            r#in: "path".into(),
            description: "object name and auth scope".into(),
            name: "namespace".into(),
            r#type: "string".into(),
            unique_items: true,
        }
    );
    let schemes = doc.security_definitions.unwrap().additional_properties;
    assert_eq!(schemes[0].name, "BearerToken");
    assert_eq!(
        schemes[0].value.as_ref().unwrap().api_key_security,
        Some(ApiKeySecurity {
            r#type: "apiKey".into(),
            name: "authorization".into(),
            r#in: "header".into()
        })
    );
    assert_eq!(doc.security[0].additional_properties[0].name, "BearerToken");
    assert_eq!(
        doc.security[0].additional_properties[0].value,
        Some(StringArray { value: vec![] })
    );
}

#[test]
fn proto3_defaults_are_left_out() {
    assert_eq!(encode_openapi_v2(&json!({})).unwrap(), Vec::<u8>::new());
    assert_eq!(
        encode_openapi_v2(&json!({"swagger": "2.0", "host": ""})).unwrap(),
        b"\x0a\x032.0"
    );
    // An empty object still marks the message as present.
    assert_eq!(
        encode_openapi_v2(&json!({"info": {}})).unwrap(),
        b"\x12\x00"
    );
}

#[test]
fn wrong_json_types_are_reported_with_their_place() {
    let err = |doc: Value| encode_openapi_v2(&doc).unwrap_err().to_string();
    assert_eq!(
        err(json!([])),
        "openapi document: document must be an object"
    );
    assert_eq!(
        err(json!({"swagger": 2})),
        "openapi document: document.swagger must be a string"
    );
    assert_eq!(
        err(json!({"paths": {"/a": {"get": {"parameters": [{"name": "x", "in": "cookie"}]}}}})),
        "openapi document: document.paths./a.get.parameters[0].in must be one of body, header, formData, query, path"
    );
    assert_eq!(
        err(json!({"definitions": {"A": {"properties": {"b": {"maxLength": 1.5}}}}})),
        "openapi document: document.definitions.A.properties.b.maxLength must be an integer"
    );
    assert!(matches!(
        encode_openapi_v2(&json!({"produces": "x"})),
        Err(ProtoError::OpenApi { .. })
    ));
}

#[test]
fn deep_schemas_are_refused_not_overflowed() {
    let deep = (0..1000).fold(
        json!({"type": "string"}),
        |inner, _| json!({"type": "array", "items": inner}),
    );
    let doc = json!({"definitions": {"Deep": deep}});
    assert!(matches!(
        encode_openapi_v2(&doc),
        Err(ProtoError::OpenApi { .. })
    ));
}
