//! A JSON body extractor whose rejections use the API's error shape.

use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// Like `axum::Json`, but a body that is not JSON, has the wrong shape or types, or
/// unknown fields answers 400 `invalid_request`, and one over the limit 413.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(JsonRejection::BytesRejection(rejection))
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::too_large("request bodies are limited to 1 MiB"))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid_request(
                "send Content-Type: application/json",
            )),
            Err(rejection) => Err(ApiError::invalid_request(rejection.body_text())),
        }
    }
}
