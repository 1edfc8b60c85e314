// The chat page: send a message, show the reply as it streams (server-sent events over fetch), retry.
// Every piece of text goes into the page through textContent, never as HTML.
"use strict";

(() => {
  const chat = document.getElementById("chat");
  if (!chat) return;

  const chatId = chat.dataset.chatId;
  const maxChars = Number(chat.dataset.maxChars);
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("content");
  const sendButton = document.getElementById("send");
  const status = document.getElementById("status");
  const count = document.getElementById("count");
  let busy = false;

  class RequestError extends Error {}

  function setStatus(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function updateControls() {
    const length = input.value.length;
    const tooLong = length > maxChars;
    count.textContent = length > maxChars * 0.8 ? `${length.toLocaleString()} / ${maxChars.toLocaleString()}` : "";
    count.classList.toggle("over", tooLong);
    sendButton.disabled = busy || tooLong || !input.value.trim();
  }

  function scrollToEnd() {
    list.lastElementChild?.scrollIntoView({ block: "end", behavior: "smooth" });
  }

  function bubble(role, text) {
    document.getElementById("empty")?.remove();
    const item = document.createElement("li");
    item.className = `msg ${role}`;
    const label = document.createElement("div");
    label.className = "role";
    label.textContent = role === "user" ? "You" : "Assistant";
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = text;
    item.append(label, content);
    list.append(item);
    scrollToEnd();
    return item;
  }

  function note(item, text, retryMessageId) {
    item.querySelector(".note")?.remove();
    const box = document.createElement("div");
    box.className = "note";
    box.textContent = text + " ";
    if (retryMessageId) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retry";
      button.dataset.messageId = String(retryMessageId);
      button.textContent = "Retry";
      box.append(button);
    }
    item.append(box);
  }

  function setTitle(title) {
    if (!title) return;
    document.getElementById("chat-title").textContent = title;
    document.title = `${title} · Chat`;
    const link = document.querySelector(`#chat-list a[data-chat-id="${chatId}"]`);
    if (link) link.textContent = title;
  }

  // Parse a text/event-stream body and call onEvent(name, data) for each event.
  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken, Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      let message = `The server answered HTTP ${response.status}.`;
      try {
        message = (await response.json()).error.message;
      } catch {
        // not JSON: keep the status line
      }
      throw new RequestError(message);
    }
    return response;
  }

  // Stream one reply into `item` (an assistant bubble). Resolves when the stream ends, whatever happened.
  async function streamReply(response, item, onUser) {
    item.classList.add("streaming");
    item.classList.remove("failed", "incomplete");
    const content = item.querySelector(".content");
    let finished = false;
    try {
      await readEvents(response, (name, data) => {
        if (name === "user") {
          onUser?.(data);
        } else if (name === "token") {
          content.append(data.text);
          scrollToEnd();
        } else if (name === "done") {
          finished = true;
          item.dataset.id = data.message.id;
          content.textContent = data.message.content;
          item.querySelector(".note")?.remove();
        } else if (name === "error") {
          finished = true;
          if (data.partial) {
            item.classList.add("incomplete");
            item.dataset.id = data.partial.id;
            note(item, `This reply was cut short: ${data.message}`, data.retry_message_id);
          } else {
            item.classList.add("failed");
            content.textContent = "";
            note(item, data.message, data.retry_message_id);
          }
        }
      });
    } catch {
      // the connection dropped mid-stream; handled below
    }
    item.classList.remove("streaming");
    if (!finished) {
      item.classList.add("incomplete");
      note(item, "The connection was lost. The reply is still being saved: reload the page in a moment.");
    }
    scrollToEnd();
  }

  async function send(text) {
    busy = true;
    updateControls();
    setStatus("Sending…");
    const mine = bubble("user", text);
    mine.classList.add("sending");
    input.value = "";
    updateControls();
    let response;
    try {
      response = await post(`/api/chats/${chatId}/messages`, { content: text });
    } catch (error) {
      // Nothing was stored: give the text back so the person can fix it and send again.
      mine.remove();
      input.value = text;
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
      busy = false;
      updateControls();
      return;
    }
    setStatus("Writing…");
    const reply = bubble("assistant", "");
    await streamReply(response, reply, (data) => {
      mine.classList.remove("sending");
      mine.dataset.id = data.message.id;
      setTitle(data.chat_title);
    });
    setStatus("");
    busy = false;
    updateControls();
  }

  async function retry(button) {
    const item = button.closest("li.msg");
    const messageId = button.dataset.messageId;
    button.disabled = true;
    setStatus("Retrying…");
    let response;
    try {
      response = await post(`/api/chats/${chatId}/messages/${messageId}/retry`, {});
    } catch (error) {
      button.disabled = false;
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
      return;
    }
    item.querySelector(".note")?.remove();
    if (!item.querySelector(".content")) {
      const content = document.createElement("div");
      content.className = "content";
      item.append(content);
    }
    item.querySelector(".content").textContent = "";
    await streamReply(response, item);
    setStatus("");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (busy || !text.trim() || text.length > maxChars) return;
    send(text);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  input.addEventListener("input", updateControls);

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button.retry");
    if (button && !button.disabled) retry(button);
  });

  updateControls();
  scrollToEnd();
  input.focus();
})();
