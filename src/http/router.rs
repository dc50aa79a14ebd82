//! The route table: path patterns (matchit) to the endpoints behind them, with
//! the 404 / 405 decisions made before anything else (routing comes before
//! authentication). Both listeners use it: the public one with [`Endpoint`]s
//! (probes and the services' routes), the admin one with its own actions.

use http::Method;

use actors::api::Route;

/// What a path and method lead to on the public listener.
#[derive(Clone)]
pub enum Endpoint {
    Live,
    Ready,
    Health,
    /// `GET /api/v1/openapi.json`.
    OpenApi,
    /// `GET /api/v1/docs` and its files.
    Docs,
    Api(Route),
}

struct Entry<E> {
    pattern: &'static str,
    methods: Vec<(Method, E)>,
}

pub enum Resolved<'a, E = Endpoint> {
    Found {
        endpoint: &'a E,
        /// The route pattern, for metrics labels (never the raw path).
        pattern: &'static str,
        params: Vec<(String, String)>,
    },
    MethodNotAllowed {
        pattern: &'static str,
        allow: Vec<Method>,
    },
    NotFound,
}

#[derive(Debug, thiserror::Error)]
#[error("route {pattern}: {source}")]
pub struct RouteError {
    pattern: &'static str,
    #[source]
    source: matchit::InsertError,
}

pub struct Router<E = Endpoint> {
    paths: matchit::Router<usize>,
    entries: Vec<Entry<E>>,
}

impl<E> Default for Router<E> {
    fn default() -> Self {
        Self {
            paths: matchit::Router::new(),
            entries: Vec::new(),
        }
    }
}

impl<E> Router<E> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(
        &mut self,
        method: Method,
        pattern: &'static str,
        endpoint: E,
    ) -> Result<(), RouteError> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.pattern == pattern) {
            entry.methods.push((method, endpoint));
            return Ok(());
        }
        self.paths
            .insert(pattern, self.entries.len())
            .map_err(|source| RouteError { pattern, source })?;
        self.entries.push(Entry {
            pattern,
            methods: vec![(method, endpoint)],
        });
        Ok(())
    }

    /// Every method and path pattern routed, in the order added.
    pub fn routes(&self) -> Vec<(Method, &'static str)> {
        self.entries
            .iter()
            .flat_map(|e| e.methods.iter().map(|(m, _)| (m.clone(), e.pattern)))
            .collect()
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolved<'_, E> {
        let Ok(matched) = self.paths.at(path) else {
            return Resolved::NotFound;
        };
        let entry = &self.entries[*matched.value];
        // HEAD is answered like GET (hyper drops the body).
        let wanted = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match entry.methods.iter().find(|(m, _)| m == wanted) {
            Some((_, endpoint)) => Resolved::Found {
                endpoint,
                pattern: entry.pattern,
                params: matched
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            },
            None => Resolved::MethodNotAllowed {
                pattern: entry.pattern,
                allow: entry.methods.iter().map(|(m, _)| m.clone()).collect(),
            },
        }
    }
}
