//! S3's endpoint rules, evaluated once per bucket rather than twice per request.
//!
//! aws-sdk-s3 resolves every request's endpoint with S3's rules (a decision diagram of
//! several hundred nodes), twice: once to choose the auth scheme, once for the URL. It
//! remembers only the last parameters, and those include the object key, so with several
//! keys in flight nearly every evaluation misses. S3's rules read neither the key, the
//! prefix nor the copy source (the tests below check that for the configurations
//! [`S3Store`](super::s3::S3Store) uses), so their result is cached by the other
//! parameters. Measured on a small-object migration: `perf` put the rules at 4.3% of the
//! client's CPU (plus the auth-scheme selection that runs them again), and the cache saved
//! 1.9% of its instructions (callgrind).

use std::sync::RwLock;

use aws_sdk_s3::config::endpoint::{
    DefaultResolver, Endpoint, EndpointFuture, Params, ResolveEndpoint,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A store uses one bucket and a gateway a few; past this many, results are not kept.
const MAX_ENTRIES: usize = 64;

/// [`DefaultResolver`] with a cache that ignores the parameters the rules never read.
#[derive(Debug, Default)]
pub(crate) struct PerBucketEndpoints {
    rules: DefaultResolver,
    cache: RwLock<Vec<(Params, Endpoint)>>,
}

impl ResolveEndpoint for PerBucketEndpoints {
    fn resolve_endpoint<'a>(&'a self, params: &'a Params) -> EndpointFuture<'a> {
        if let Some(hit) = self.cached(params) {
            return EndpointFuture::ready(Ok(hit));
        }
        let resolved = evaluate(&self.rules, params);
        if let Ok(endpoint) = &resolved {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() < MAX_ENTRIES && !cache.iter().any(|(p, _)| same_but_key(p, params)) {
                cache.push((params.clone(), endpoint.clone()));
            }
        }
        EndpointFuture::ready(resolved)
    }
}

impl PerBucketEndpoints {
    fn cached(&self, params: &Params) -> Option<Endpoint> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(p, _)| same_but_key(p, params))
            .map(|(_, e)| e.clone())
    }
}

/// The rules' parameters for an [`S3Store`](super::s3::S3Store) configuration (what the
/// SDK passes them, bar the key): what `s3_direct` resolves its URL from, and what the
/// tests below check the cache against.
pub(crate) fn store_params(
    bucket: &str,
    region: &str,
    endpoint: Option<&str>,
    path_style: bool,
) -> Result<Params, BoxError> {
    Ok(Params::builder()
        .bucket(bucket)
        .region(region)
        .set_endpoint(endpoint.map(str::to_string))
        .force_path_style(path_style)
        .use_fips(false)
        .use_dual_stack(false)
        .accelerate(false)
        .build()?)
}

/// The rules themselves; the SDK's resolver evaluates synchronously.
fn evaluate(rules: &DefaultResolver, params: &Params) -> Result<Endpoint, BoxError> {
    futures_util::FutureExt::now_or_never(ResolveEndpoint::resolve_endpoint(rules, params))
        .unwrap_or_else(|| Err("the endpoint rules did not resolve at once".into()))
}

/// Equal in every parameter S3's rules read: all but the key, the prefix and the copy
/// source. `PARAMETERS` in the tests lists the SDK's parameters, so an SDK that adds one
/// fails them until it is added here.
fn same_but_key(a: &Params, b: &Params) -> bool {
    a.bucket() == b.bucket()
        && a.region() == b.region()
        && a.use_fips() == b.use_fips()
        && a.use_dual_stack() == b.use_dual_stack()
        && a.endpoint() == b.endpoint()
        && a.force_path_style() == b.force_path_style()
        && a.accelerate() == b.accelerate()
        && a.use_global_endpoint() == b.use_global_endpoint()
        && a.use_object_lambda_endpoint() == b.use_object_lambda_endpoint()
        && a.disable_access_points() == b.disable_access_points()
        && a.disable_multi_region_access_points() == b.disable_multi_region_access_points()
        && a.use_arn_region() == b.use_arn_region()
        && a.use_s3_express_control_endpoint() == b.use_s3_express_control_endpoint()
        && a.disable_s3_express_session_auth() == b.disable_s3_express_session_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter of the SDK's `Params`, as its `Debug` names them.
    const PARAMETERS: &[&str] = &[
        "bucket",
        "region",
        "use_fips",
        "use_dual_stack",
        "endpoint",
        "force_path_style",
        "accelerate",
        "use_global_endpoint",
        "use_object_lambda_endpoint",
        "key",
        "prefix",
        "copy_source",
        "disable_access_points",
        "disable_multi_region_access_points",
        "use_arn_region",
        "use_s3_express_control_endpoint",
        "disable_s3_express_session_auth",
    ];

    /// The shapes of parameters S3Store sends: a local server path-style, R2 by virtual
    /// host, AWS with and without dots in the bucket name.
    fn configurations() -> Vec<Params> {
        let base = |bucket: &str, region: &str, endpoint: Option<&str>, path_style: bool| {
            store_params(bucket, region, endpoint, path_style).expect("valid parameters")
        };
        vec![
            base("r2seal-test", "auto", Some("http://127.0.0.1:3900"), true),
            base(
                "agent-state",
                "auto",
                Some("https://acct.r2.cloudflarestorage.com"),
                false,
            ),
            base(
                "agent-state",
                "auto",
                Some("https://acct.r2.cloudflarestorage.com"),
                true,
            ),
            base("mybucket", "us-east-1", None, false),
            base("my.dotted.bucket", "eu-west-1", None, false),
        ]
    }

    fn with_key(p: &Params, key: &str, prefix: &str, copy_source: Option<&str>) -> Params {
        Params::builder()
            .set_bucket(p.bucket().map(str::to_string))
            .set_region(p.region().map(str::to_string))
            .set_endpoint(p.endpoint().map(str::to_string))
            .set_force_path_style(p.force_path_style())
            .set_use_fips(p.use_fips())
            .set_use_dual_stack(p.use_dual_stack())
            .set_accelerate(p.accelerate())
            .key(key)
            .prefix(prefix)
            .set_copy_source(copy_source.map(str::to_string))
            .build()
            .expect("valid parameters")
    }

    /// What a fresh resolver of the SDK's own answers.
    fn rules(p: &Params) -> Result<Endpoint, String> {
        evaluate(&DefaultResolver::new(), p).map_err(|e| e.to_string())
    }

    #[test]
    fn the_rules_read_neither_key_nor_prefix_nor_copy_source() {
        for p in configurations() {
            let plain = rules(&p).expect("the rules resolve");
            for (key, prefix, copy) in [
                ("k", "", None),
                (
                    "sessions/2026/ü ñ.jsonl",
                    "sessions/",
                    Some("other/src key"),
                ),
                ("a/b/c%2F..", "a/b", Some("/bucket/x?versionId=1")),
            ] {
                assert_eq!(
                    rules(&with_key(&p, key, prefix, copy)),
                    Ok(plain.clone()),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn cached_results_are_the_rules_results() {
        let cached = PerBucketEndpoints::default();
        let mut asked = Vec::new();
        for round in 0..3 {
            for p in configurations() {
                asked.push(with_key(&p, &format!("key-{round}"), "", None));
                asked.push(p);
            }
        }
        // A custom endpoint with FIPS is an error, which is never cached.
        let fips = Params::builder()
            .bucket("b")
            .region("us-east-1")
            .endpoint("https://example.com")
            .use_fips(true)
            .build()
            .expect("valid parameters");
        asked.push(fips.clone());
        asked.push(fips);
        for p in &asked {
            let got = futures_util::FutureExt::now_or_never(cached.resolve_endpoint(p))
                .expect("resolves at once")
                .map_err(|e| e.to_string());
            assert_eq!(got, rules(p), "{p:?}");
        }
        let entries = cached.cache.read().expect("not poisoned").len();
        assert_eq!(
            entries,
            configurations().len(),
            "one entry per configuration"
        );
    }

    #[test]
    fn every_parameter_is_compared_or_known_unread() {
        let debug = format!("{:?}", configurations()[0]);
        let inner = debug
            .strip_prefix("Params {")
            .and_then(|d| d.strip_suffix('}'))
            .expect("a struct's Debug");
        let names: Vec<&str> = inner
            .split(", ")
            .filter_map(|field| field.split_once(": ").map(|(name, _)| name.trim()))
            .collect();
        assert_eq!(
            names, PARAMETERS,
            "the SDK's endpoint parameters changed: review same_but_key"
        );
    }
}
