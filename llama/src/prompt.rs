//! How a backend that continues raw text answers a chat: the model's chat template
//! and its call syntax. The embedded runtime uses it, and so can any text-level
//! backend (the scripted models of the agent's and serve's tests).

use jielong_chat::chat::{Message, Role};
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{GenerateRequest, Generation, ToolConstraint};
use jielong_chat::respond::{call_check, CallMode, Chat, ChatRequest};
use jielong_chat::tool_format::ToolCallFormat;

use crate::template::ChatTemplate;

/// How a backend that continues raw text answers a [`Chat`]: the model's chat
/// template, and its tool-call syntax (for the grammar and the parser).
#[derive(Debug, Clone)]
pub struct PromptFormat {
    /// The chat template.
    pub template: ChatTemplate,
    /// The tool-call syntax.
    pub calls: ToolCallFormat,
}

impl PromptFormat {
    /// The prompt for `chat`: the messages rendered for the assistant's reply, the
    /// prefill appended. A format without native tool support gets the tools described
    /// in the system message instead of the template's tool list.
    pub fn render(&self, chat: &Chat) -> Result<String, RuntimeError> {
        let mut prompt = if self.calls.is_native() || chat.tools.is_empty() {
            self.template.render(&chat.messages, &chat.tools, true)?
        } else {
            let instructions = ToolCallFormat::generic_instructions(&chat.tools);
            let mut messages = chat.messages.clone();
            match messages.first_mut() {
                Some(first) if first.role == Role::System => {
                    if !first.content.is_empty() {
                        first.content.push_str("\n\n");
                    }
                    first.content.push_str(instructions.trim_end());
                }
                _ => messages.insert(0, Message::system(instructions.trim_end())),
            }
            self.template.render(&messages, &[], true)?
        };
        prompt.push_str(&chat.prefill);
        Ok(prompt)
    }

    /// The raw-text request for `request` on `chat`: calls constrained to the callable
    /// tools in this format.
    pub fn request(&self, chat: &Chat, request: &ChatRequest) -> GenerateRequest {
        let tools = request.callable(chat);
        let calls = !tools.is_empty() && request.calls == CallMode::Constrained;
        let constraint = (calls || request.format.is_some()).then(|| ToolConstraint {
            max_calls: request.max_calls.max(1),
            reply: request.format.clone(),
            ..ToolConstraint::new(
                self.calls,
                if calls { tools.to_vec() } else { Vec::new() },
                request.tool_choice,
            )
        });
        request.text_request(constraint)
    }

    /// Answers `chat` on a raw-text `generate`: renders, constrains, and splits the
    /// output into prose and schema-checked calls.
    pub fn respond(
        &self,
        chat: &Chat,
        request: &ChatRequest,
        generate: impl FnOnce(&str, &GenerateRequest) -> Result<Generation, RuntimeError>,
    ) -> Result<Generation, RuntimeError> {
        request.validate(chat)?;
        let prompt = self.render(chat)?;
        let text_request = self.request(chat, request);
        let tools = request.callable(chat);
        let generation = generate(&prompt, &text_request)?;
        Ok(generation.parsing(self.calls, (!tools.is_empty()).then(|| call_check(tools))))
    }
}
