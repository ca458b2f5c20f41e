//! The route table: every path the service answers, its method and its metrics label, in one place.
//!
//! The router matches requests against it, the metrics use it as their fixed `route` label set, and the
//! OpenAPI test checks the document against it, so a route cannot be added to one and forgotten in another.

use http::Method;

/// Every route the server answers, plus [`Route::Unmatched`] for any other path.
///
/// The discriminants are the routes' positions in [`Route::EVERY`]; the metrics index their arrays by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Root = 0,
    Health,
    ApiHealth,
    Ready,
    HealthReady,
    ApiReady,
    Validate,
    ApiValidate,
    OpenApi,
    Docs,
    Metrics,
    /// Any other path; one label, whatever the path was.
    Unmatched,
}

impl Route {
    /// Every matched route with its path and method: the table itself.
    pub const ALL: [(Route, &'static str, Method); 11] = [
        (Route::Root, "/", Method::GET),
        (Route::Health, "/health", Method::GET),
        (Route::ApiHealth, "/api/v1/health", Method::GET),
        (Route::Ready, "/ready", Method::GET),
        (Route::HealthReady, "/health/ready", Method::GET),
        (Route::ApiReady, "/api/v1/ready", Method::GET),
        (Route::Validate, "/validate", Method::POST),
        (Route::ApiValidate, "/api/v1/validate", Method::POST),
        (Route::OpenApi, "/openapi.json", Method::GET),
        (Route::Docs, "/docs", Method::GET),
        (Route::Metrics, "/metrics", Method::GET),
    ];

    /// Every route including [`Route::Unmatched`], in index order: the metrics' label set.
    pub const EVERY: [Route; 12] = [
        Route::Root,
        Route::Health,
        Route::ApiHealth,
        Route::Ready,
        Route::HealthReady,
        Route::ApiReady,
        Route::Validate,
        Route::ApiValidate,
        Route::OpenApi,
        Route::Docs,
        Route::Metrics,
        Route::Unmatched,
    ];

    /// The route a path belongs to.
    pub fn of(path: &str) -> Route {
        Route::ALL
            .iter()
            .find(|(_, p, _)| *p == path)
            .map_or(Route::Unmatched, |(route, _, _)| *route)
    }

    /// The route's position in [`Route::EVERY`] (and in [`Route::ALL`] for matched routes).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The path template, used as the metrics label.
    pub fn label(self) -> &'static str {
        Route::ALL
            .get(self.index())
            .map_or("unmatched", |(_, path, _)| path)
    }

    /// The one method the route serves (`HEAD` is answered like `GET`); `None` for unmatched paths.
    pub fn method(self) -> Option<&'static Method> {
        Route::ALL.get(self.index()).map(|(_, _, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_both_tables() {
        for (i, route) in Route::EVERY.iter().enumerate() {
            assert_eq!(route.index(), i, "{route:?}");
        }
        for (i, (route, _, _)) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), i, "{route:?}");
        }
        assert_eq!(Route::EVERY.len(), Route::ALL.len() + 1);
    }

    #[test]
    fn routes_and_labels() {
        assert_eq!(Route::of("/api/v1/validate"), Route::ApiValidate);
        assert_eq!(Route::of("/api/v1/validate/"), Route::Unmatched);
        assert_eq!(Route::Unmatched.label(), "unmatched");
        assert_eq!(Route::HealthReady.label(), "/health/ready");
        assert_eq!(Route::Validate.method(), Some(&Method::POST));
        assert_eq!(Route::Unmatched.method(), None);
    }
}
