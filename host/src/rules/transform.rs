//! Input transformers: EventBridge's InputPathsMap + InputTemplate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTransformer {
    #[serde(default)]
    pub input_paths_map: BTreeMap<String, String>,
    pub input_template: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError(pub String);
impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn validate_target_input(_t: &crate::rules::Target) -> Result<(), TransformError> {
    Ok(())
}
pub struct TransformContext<'a> {
    pub rule_name: &'a str,
    pub rule_arn: &'a str,
    pub ingestion_time: &'a str,
}
pub fn render_target_input(
    _t: &crate::rules::Target,
    _e: &serde_json::Value,
    _c: &TransformContext,
) -> Result<Option<String>, TransformError> {
    Ok(None)
}
