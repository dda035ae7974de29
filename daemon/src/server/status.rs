//! The one place a gRPC status code is chosen: `impl From<ServiceError> for Status`. Handlers, the
//! auth interceptor and the Fetch stream all report a [`ServiceError`] and let this decide.

use tonic::Status;

use crate::service::ServiceError;
use crate::store::error::StoreError;

/// Longest message a `Status` carries: messages quote request fields, and a message over the peer's
/// header-size limit turns a clear refusal into an HTTP/2 protocol error.
const MAX_STATUS_MESSAGE: usize = 2048;

/// `msg`, cut at [`MAX_STATUS_MESSAGE`] bytes (on a character boundary) with a note saying so.
fn clip(mut msg: String) -> String {
    if msg.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let total = msg.len();
        msg.truncate(end);
        msg.push_str(&format!("… ({total} bytes, truncated)"));
    }
    msg
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let mut status = status_of(&e);
        // Marked as the daemon's answer (`cairn_proto::ERROR_ORIGIN_KEY`).
        status.metadata_mut().insert(
            cairn_proto::ERROR_ORIGIN_KEY,
            tonic::metadata::MetadataValue::from_static("cairnd"),
        );
        status
    }
}

fn status_of(e: &ServiceError) -> Status {
    let msg = clip(e.to_string());
    match e {
        ServiceError::InvalidArgument(_) => Status::invalid_argument(msg),
        ServiceError::Unauthenticated(_) => Status::unauthenticated(msg),
        ServiceError::NotFound(_) => Status::not_found(msg),
        ServiceError::DataLoss(_) => Status::data_loss(msg),
        ServiceError::Storage(s) if s.is_not_found() => Status::not_found(msg),
        // Transient storage trouble: the client may retry.
        ServiceError::Storage(s) if s.is_transient() || s.is_unavailable() => {
            Status::unavailable(msg)
        }
        ServiceError::Storage(_) => Status::failed_precondition(msg),
        ServiceError::Store(s) if s.is_no_space() => Status::resource_exhausted(msg),
        ServiceError::Store(StoreError::Sha256Mismatch { .. }) => Status::data_loss(msg),
        ServiceError::Store(StoreError::Archive { .. }) => Status::data_loss(msg),
        ServiceError::Store(StoreError::InvalidPin(_)) => Status::invalid_argument(msg),
        ServiceError::Store(_) | ServiceError::Internal(_) => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_clipped_on_a_char_boundary() {
        let s = Status::from(ServiceError::InvalidArgument("é".repeat(3000)));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().len() < MAX_STATUS_MESSAGE + 64);
        assert!(s.message().ends_with("(6000 bytes, truncated)"));
    }

    #[test]
    fn codes_follow_the_error_kind() {
        let code = |e| Status::from(e).code();
        assert_eq!(
            code(ServiceError::NotFound("x".into())),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(ServiceError::DataLoss("x".into())),
            tonic::Code::DataLoss
        );
        assert_eq!(
            code(ServiceError::Unauthenticated("x".into())),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(ServiceError::Internal("x".into())),
            tonic::Code::Internal
        );
    }
}
