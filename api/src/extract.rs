//! Extractors whose rejections come out in our JSON error shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use crate::error::ApiError;

/// `axum::Json` with JSON errors: 400 for bad JSON, 413 too large, 415 wrong type.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {} bytes", crate::API_BODY_LIMIT),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected content-type: application/json",
            ),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

/// A whole number sent as `41` or as `41.0`: JSON Schema's `integer` admits
/// both, so a client's encoder may choose either.
pub fn whole<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    let v =
        n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19).map(|f| f as u64));
    v.and_then(|v| T::try_from(v).ok()).ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

/// A signed whole number that fits an `i32`, given as an integer or as a
/// float with no fraction (`1412.0`, valid JSON Schema `integer`).
pub fn whole_i32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::de::Error;
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    let v = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.3e18).map(|f| f as i64));
    v.and_then(|v| i32::try_from(v).ok()).ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

/// [`whole`] for an optional field (absent or `null` is `None`).
pub fn whole_opt<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Whole<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    Ok(<Option<Whole<T>> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

/// Parse an optional JSON body: empty or `null` means `T::default()`.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_body", r.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(&body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}
