//! The patch algorithms of the apiserver's PATCH verb, as pure functions over
//! `serde_json::Value`:
//!
//! - [`json_patch`]: `application/json-patch+json` (RFC 6902), with the quirks and
//!   error texts of the JSON patch library the real apiserver uses;
//! - [`merge_patch`]: `application/merge-patch+json` (RFC 7386);
//! - [`strategic_merge_patch`]: `application/strategic-merge-patch+json`, driven by the
//!   per-field patch metadata of the built-in kinds (see `schema`).
//!
//! Server-side apply (`application/apply-patch+yaml`) lives in [`crate::apply`]; it
//! shares the type table of this module and the field sets of `fieldpath`/`typed`.
//!
//! Nothing here stores, validates or defaults objects: the apiserver does that
//! around these functions.

mod gofmt;
mod json;
mod merge;
mod strategic;

pub(crate) mod fieldpath;
pub(crate) mod schema;
pub(crate) mod typed;

pub use json::json_patch;
pub use merge::merge_patch;
pub use strategic::strategic_merge_patch;

/// Why a patch could not be applied. Each message reads as the real apiserver writes it;
/// [`PatchError::code`] gives the HTTP status it answers with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch body does not decode as this patch type's document.
    #[error("{0}")]
    Decode(String),
    /// More operations than the apiserver accepts in one JSON patch.
    #[error("The allowed maximum operations in a JSON patch is {max}, got {got}")]
    JsonPatchTooLarge { max: usize, got: usize },
    /// A JSON patch operation does not apply to the document.
    #[error("{0}")]
    JsonPatchApply(String),
    /// A merge patch that is neither an object nor a list.
    #[error("Invalid JSON Patch")]
    MergePatchInvalid,
    /// A list item of a merge list lacks its merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey { map: String, key: String },
    /// A `$patch` directive this patch format does not know.
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownPatchType { directive: String, map: String },
    /// `$patch: merge` inside a list.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// A list of maps marked as a merge list of primitives.
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKey(String),
    /// A malformed `$deleteFromPrimitiveList/<field>` directive.
    #[error("invalid patch format of primitive list")]
    BadPrimitiveList,
    /// A malformed `$retainKeys` directive, or patch keys it does not retain.
    #[error("invalid patch format of retainKeys")]
    BadRetainKeys,
    /// A malformed `$setElementOrder/<field>` directive.
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrder,
    /// A `$setElementOrder` list that does not keep the order of the patch list.
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    SetElementOrderMismatch { patch: String, order: String },
    /// A value of the wrong JSON type where a list or map was expected.
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType {
        expected: &'static str,
        actual: &'static str,
    },
    /// Items of one list with different JSON types.
    #[error("list element types are not identical: {0}")]
    MixedListTypes(String),
    /// A list whose items are lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A `$setElementOrder` directive for a list that is empty on both sides.
    #[error("no elements in any of the given slices")]
    NoElements,
    /// A merge list holding an item that is not a map.
    #[error("value for key {0} is not a map")]
    NotAMap(usize),
}

/// A shorthand for results of this module.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

impl PatchError {
    /// The HTTP status code the real apiserver answers with for this error: 400 for a
    /// malformed body, 413 for too many operations, 422 for a patch that does not apply,
    /// 500 for the strategic merge errors it does not classify.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::Decode(_)
            | PatchError::MergePatchInvalid
            | PatchError::BadPrimitiveList
            | PatchError::BadRetainKeys
            | PatchError::BadSetElementOrder => 400,
            PatchError::JsonPatchTooLarge { .. } => 413,
            PatchError::JsonPatchApply(_) | PatchError::ListOfLists => 422,
            _ => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_apiserver_classification() {
        assert_eq!(PatchError::Decode(String::new()).code(), 400);
        assert_eq!(PatchError::BadRetainKeys.code(), 400);
        assert_eq!(PatchError::JsonPatchTooLarge { max: 1, got: 2 }.code(), 413);
        assert_eq!(PatchError::JsonPatchApply(String::new()).code(), 422);
        assert_eq!(PatchError::ListOfLists.code(), 422);
        assert_eq!(PatchError::MergeDirectiveInList.code(), 500);
    }
}
