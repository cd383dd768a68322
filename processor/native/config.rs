//! What tools' events mean for compliance: the `[native.*]` config sections.
//!
//! ```toml
//! [native.github]
//! test_names = ["test"]          # check runs / workflows whose name contains one of these are test runs
//! scans = { CodeQL = "sast", dependency-review = "sca" }  # … are security scans of that type
//!
//! [native.okta]
//! environment = "production"     # the environment Okta grants below give access to
//! groups = ["prod-deployers"]    # group memberships that are production access
//! elevated_groups = ["prod-break-glass"]  # ... that are break-glass (elevated) access
//! apps = ["AWS Production"]      # app assignments that are production access
//! admin_privileges = true        # Okta admin role grants count as production access
//! request_field = "debugContext.debugData.accessRequestId"  # where a grant names its request
//!
//! [native.jira]
//! projects = { PAY = "payments" }  # project key → service, for issues with no component or label
//!
//! [native.kubernetes]
//! namespaces = { payments-prod = "production" }  # namespace → environment; others are ignored
//! pipeline_users = ["system:serviceaccount:argocd:argocd-application-controller"]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[native]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeConfig {
    #[serde(default)]
    pub github: GithubConfig,
    #[serde(default)]
    pub okta: OktaConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub jira: JiraConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// Project key → service, for a change issue that names no component
    /// or label.
    #[serde(default)]
    pub projects: BTreeMap<String, String>,
}

impl NativeConfig {
    /// Checks what serde cannot: values that must be canonical symbols.
    pub fn validate(&self) -> Result<(), String> {
        const SCAN_TYPES: [&str; 4] = ["sast", "dast", "sca", "secrets"];
        for (name, kind) in &self.github.scans {
            if !SCAN_TYPES.contains(&kind.as_str()) {
                return Err(format!(
                    "native.github.scans.{name}: `{kind}` is not a scan type; use {}",
                    SCAN_TYPES.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// A check run, check suite or workflow run whose name contains one of
    /// these (case-insensitively) is a test run; any other is a build.
    #[serde(default = "default_test_names")]
    pub test_names: Vec<String>,
    /// Check runs whose name contains a key (case-insensitively) are
    /// security scans of that type (sast, dast, sca, secrets), e.g.
    /// `{ CodeQL = "sast", dependency-review = "sca" }`.
    #[serde(default = "default_scans")]
    pub scans: BTreeMap<String, String>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig { test_names: default_test_names(), scans: default_scans() }
    }
}

fn default_scans() -> BTreeMap<String, String> {
    [("codeql", "sast"), ("dependency-review", "sca")].map(|(k, v)| (k.to_string(), v.to_string())).into()
}

fn default_test_names() -> Vec<String> {
    vec!["test".into()]
}

impl GithubConfig {
    /// The scan type of a check named `name`, if it is a scan.
    pub fn scan_type(&self, name: &str) -> Option<&str> {
        let name = name.to_lowercase();
        self.scans.iter().find(|(k, _)| name.contains(&k.to_lowercase())).map(|(_, v)| v.as_str())
    }

    pub fn is_test(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.test_names.iter().any(|t| name.contains(&t.to_lowercase()))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaConfig {
    /// The environment the listed groups and apps give access to.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Groups whose membership is production access (granted / revoked).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Groups whose membership is break-glass access (elevated / revoked).
    #[serde(default)]
    pub elevated_groups: Vec<String>,
    /// Applications whose assignment is production access.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Whether Okta administrator role grants count as production access.
    #[serde(default = "yes")]
    pub admin_privileges: bool,
    /// Dotted path in the event to the access request (change id) a grant
    /// was made under; without one, grants name no request (AC-02 flags them).
    #[serde(default)]
    pub request_field: Option<String>,
}

impl Default for OktaConfig {
    fn default() -> Self {
        OktaConfig {
            environment: default_environment(),
            groups: Vec::new(),
            elevated_groups: Vec::new(),
            apps: Vec::new(),
            admin_privileges: true,
            request_field: None,
        }
    }
}

fn default_environment() -> String {
    "production".into()
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace → environment. Changes in other namespaces are ignored.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Users whose changes are the pipeline's own (a GitOps controller, a CD
    /// service account): the pipeline reports those deploys itself.
    #[serde(default)]
    pub pipeline_users: Vec<String>,
    /// Workload resources whose changes are deploys.
    #[serde(default = "default_resources")]
    pub resources: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig { namespaces: BTreeMap::new(), pipeline_users: Vec::new(), resources: default_resources() }
    }
}

fn default_resources() -> Vec<String> {
    ["deployments", "statefulsets", "daemonsets", "cronjobs"].map(String::from).to_vec()
}
