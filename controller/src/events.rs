//! core/v1 Events about objects, written as client-go's event recorder writes them
//! (`kubectl describe` lists them): in the background, a bounded number at a time,
//! a failure only logged.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

/// How many event writes may be in flight at once.
const CONCURRENT_EVENTS: usize = 16;

/// Records Events as one component.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    writes: Arc<Semaphore>,
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder {
            client,
            component,
            writes: Arc::new(Semaphore::new(CONCURRENT_EVENTS)),
        }
    }

    /// Records an Event of `type_` (Normal, Warning) about `object`.
    pub fn record<K>(&self, object: &K, type_: &str, reason: &str, action: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = object.namespace().unwrap_or_else(|| "default".into());
        let stamp = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", object.name_any(), stamp.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(object.name_any()),
                namespace: object.namespace(),
                uid: object.uid(),
                resource_version: object.resource_version(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            first_timestamp: Some(Time(stamp)),
            last_timestamp: Some(Time(stamp)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let writes = self.writes.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let Ok(_permit) = writes.acquire_owned().await else {
                return;
            };
            if let Err(err) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %err, %reason, "recording event");
            }
        });
    }
}
