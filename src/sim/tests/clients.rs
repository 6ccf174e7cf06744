//! Real client libraries against the simulator: if ollama-rs and async-openai parse
//! what it sends, the wire format is close enough to Ollama's.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs, FinishReason,
};
use futures::StreamExt;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::generation::completion::request::GenerationRequest;
use ollama_rs::generation::embeddings::request::GenerateEmbeddingsRequest;
use ollama_rs::Ollama;

use super::{fast_args, start};

#[tokio::test]
async fn ollama_rs_understands_the_simulator() {
    let sim = start(fast_args()).await;
    let ollama = Ollama::try_new(format!("http://{}", sim.addr)).expect("URL");

    let models = ollama.list_local_models().await.expect("list");
    assert_eq!(models[0].name, "llama3:latest");
    let info = ollama.show_model_info("llama3".into()).await.expect("show");
    assert_eq!(info.capabilities, ["completion"]);

    let request = ChatMessageRequest::new("llama3".into(), vec![ChatMessage::user("hi".into())]);
    let mut stream = ollama
        .send_chat_messages_stream(request)
        .await
        .expect("chat");
    let mut content = String::new();
    let mut final_data = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        content.push_str(&chunk.message.content);
        if chunk.done {
            final_data = chunk.final_data;
        }
    }
    assert_eq!(content.split(' ').count(), 5);
    let final_data = final_data.expect("final chunk carries metrics");
    assert_eq!(final_data.eval_count, 5);

    let answer = ollama
        .generate(GenerationRequest::new("llama3".into(), "hello"))
        .await
        .expect("generate");
    assert!(answer.done);
    assert_eq!(answer.eval_count, Some(5));

    let embeddings = ollama
        .generate_embeddings(GenerateEmbeddingsRequest::new(
            "llama3".into(),
            "text".into(),
        ))
        .await
        .expect("embed");
    assert_eq!(embeddings.embeddings[0].len(), 8);
}

#[tokio::test]
async fn async_openai_streams_a_chat_completion() {
    let sim = start(fast_args()).await;
    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{}/v1", sim.addr))
        .with_api_key("ollama");
    let client = async_openai::Client::with_config(config);
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content("hi")
        .build()
        .expect("message");
    let request = CreateChatCompletionRequestArgs::default()
        .model("llama3")
        .messages([message.into()])
        .max_tokens(3u32)
        .build()
        .expect("request");

    let mut stream = client
        .chat()
        .create_stream(request.clone())
        .await
        .expect("stream");
    let mut content = String::new();
    let mut finish_reason = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk parses");
        for choice in chunk.choices {
            content.push_str(choice.delta.content.as_deref().unwrap_or_default());
            finish_reason = finish_reason.or(choice.finish_reason);
        }
    }
    assert_eq!(content.split(' ').count(), 3);
    assert_eq!(finish_reason, Some(FinishReason::Length));

    let mut whole = request;
    whole.stream = None;
    let answer = client.chat().create(whole).await.expect("completion");
    assert_eq!(answer.usage.map(|usage| usage.completion_tokens), Some(3));
}
