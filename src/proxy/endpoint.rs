//! Classifies a request by method and path into what corral must do with it.

use http::Method;

/// Every route Ollama serves, grouped by how corral handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    // Answered by corral for the whole fleet.
    Root,
    Version,
    Tags,
    Ps,
    OpenAiModels,
    OpenAiModel(String),
    // Proxied; need a backend holding the model named in the body.
    Generate,
    Chat,
    Embed,
    Embeddings,
    Show,
    Push,
    Copy,
    Delete,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OpenAiResponses,
    OpenAiMessages,
    // Proxied; any healthy backend.
    Pull,
    // Proxied; pinned to one backend so a model's blobs and its create meet.
    Create,
    Blob,
    /// A route corral does not know (a newer Ollama's): passed to any healthy backend.
    Other,
}

impl Endpoint {
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        match path {
            "/" if get => Endpoint::Root,
            "/api/version" if get => Endpoint::Version,
            "/api/tags" if get => Endpoint::Tags,
            "/api/ps" if get => Endpoint::Ps,
            "/v1/models" if get => Endpoint::OpenAiModels,
            "/api/generate" if post => Endpoint::Generate,
            "/api/chat" if post => Endpoint::Chat,
            "/api/embed" if post => Endpoint::Embed,
            "/api/embeddings" if post => Endpoint::Embeddings,
            "/api/show" if post => Endpoint::Show,
            "/api/push" if post => Endpoint::Push,
            "/api/copy" if post => Endpoint::Copy,
            "/api/delete" if method == Method::DELETE => Endpoint::Delete,
            "/api/pull" if post => Endpoint::Pull,
            "/api/create" if post => Endpoint::Create,
            "/v1/chat/completions" if post => Endpoint::OpenAiChat,
            "/v1/completions" if post => Endpoint::OpenAiCompletions,
            "/v1/embeddings" if post => Endpoint::OpenAiEmbeddings,
            "/v1/responses" if post => Endpoint::OpenAiResponses,
            "/v1/messages" if post => Endpoint::OpenAiMessages,
            _ if path.starts_with("/api/blobs/") && (post || method == Method::HEAD) => {
                Endpoint::Blob
            }
            _ if get && path.starts_with("/v1/models/") => {
                Endpoint::OpenAiModel(path["/v1/models/".len()..].to_string())
            }
            _ => Endpoint::Other,
        }
    }

    /// Short name used in logs and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Root => "root",
            Endpoint::Version => "version",
            Endpoint::Tags => "tags",
            Endpoint::Ps => "ps",
            Endpoint::OpenAiModels | Endpoint::OpenAiModel(_) => "openai_models",
            Endpoint::Generate => "generate",
            Endpoint::Chat => "chat",
            Endpoint::Embed => "embed",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Show => "show",
            Endpoint::Push => "push",
            Endpoint::Copy => "copy",
            Endpoint::Delete => "delete",
            Endpoint::OpenAiChat => "openai_chat",
            Endpoint::OpenAiCompletions => "openai_completions",
            Endpoint::OpenAiEmbeddings => "openai_embeddings",
            Endpoint::OpenAiResponses => "openai_responses",
            Endpoint::OpenAiMessages => "openai_messages",
            Endpoint::Pull => "pull",
            Endpoint::Create => "create",
            Endpoint::Blob => "blobs",
            Endpoint::Other => "other",
        }
    }

    /// Errors on `/v1/*` use OpenAI's shape and SSE framing.
    pub fn is_openai(&self) -> bool {
        matches!(
            self,
            Endpoint::OpenAiModels
                | Endpoint::OpenAiModel(_)
                | Endpoint::OpenAiChat
                | Endpoint::OpenAiCompletions
                | Endpoint::OpenAiEmbeddings
                | Endpoint::OpenAiResponses
                | Endpoint::OpenAiMessages
        )
    }

    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Endpoint::Root
                | Endpoint::Version
                | Endpoint::Tags
                | Endpoint::Ps
                | Endpoint::OpenAiModels
                | Endpoint::OpenAiModel(_)
        )
    }

    /// Runs the model: a success proves the model is loaded on that backend.
    pub fn is_inference(&self) -> bool {
        matches!(
            self,
            Endpoint::Generate
                | Endpoint::Chat
                | Endpoint::Embed
                | Endpoint::Embeddings
                | Endpoint::OpenAiChat
                | Endpoint::OpenAiCompletions
                | Endpoint::OpenAiEmbeddings
                | Endpoint::OpenAiResponses
                | Endpoint::OpenAiMessages
        )
    }

    /// JSON body fields that name the model, in the order clients use them; `None` when
    /// the route is not routed by model.
    pub fn model_fields(&self) -> Option<&'static [&'static str]> {
        match self {
            e if e.is_inference() => Some(&["model"]),
            // Older clients send `name` on these.
            Endpoint::Show | Endpoint::Push | Endpoint::Delete | Endpoint::Pull => {
                Some(&["model", "name"])
            }
            Endpoint::Copy => Some(&["source"]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ollama_routes() {
        assert_eq!(Endpoint::classify(&Method::HEAD, "/"), Endpoint::Root);
        assert_eq!(
            Endpoint::classify(&Method::POST, "/api/chat"),
            Endpoint::Chat
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/api/chat"),
            Endpoint::Other
        );
        assert_eq!(
            Endpoint::classify(&Method::DELETE, "/api/delete"),
            Endpoint::Delete
        );
        assert_eq!(
            Endpoint::classify(&Method::HEAD, "/api/blobs/sha256:ab"),
            Endpoint::Blob
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/v1/models/llama3:8b"),
            Endpoint::OpenAiModel("llama3:8b".into())
        );
        assert_eq!(
            Endpoint::classify(&Method::GET, "/api/tags/"),
            Endpoint::Tags
        );
        assert!(Endpoint::OpenAiChat.is_openai());
    }
}
