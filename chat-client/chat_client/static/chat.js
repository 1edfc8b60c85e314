// The chat pages: send a message, show the reply as it streams (server-sent events over fetch), stop,
// retry, regenerate, copy, rename and delete chats, and follow what other tabs do (live updates).
// Text goes into the page through textContent; the one exception is an answer's HTML, which the server
// rendered from Markdown and sanitised (chat_client/markdown.py).
"use strict";

(() => {
  const csrfToken = document.body.dataset.csrf;
  const chat = document.getElementById("chat");
  const chatId = chat?.dataset.chatId;

  class RequestError extends Error {}

  // A random id for this tab: the server leaves out of the live stream what this tab did itself.
  const tabId = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");

  async function request(method, url, body, accept = "application/json") {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken, "X-Tab-Id": tabId, Accept: accept },
      body: body === undefined ? undefined : JSON.stringify(body),
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

  // Delete buttons: in the sidebar of every page, and in the chat's header.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.delete-chat");
    if (!button) return;
    const row = document.querySelector(`#chat-list a[data-chat-id="${button.dataset.chatId}"]`);
    const name = row ? row.textContent : "this chat";
    if (!window.confirm(`Delete “${name}” and all its messages? This cannot be undone.`)) return;
    try {
      await request("DELETE", `/api/chats/${button.dataset.chatId}`);
    } catch (error) {
      window.alert(error instanceof RequestError ? error.message : "Could not reach the chat server.");
      return;
    }
    if (button.dataset.chatId === chatId) {
      window.location.assign("/");
    } else if (!chatId) {
      window.location.reload(); // the start page lists the chats twice
    } else {
      row?.closest("li").remove();
    }
  });

  if (!chat) return;

  const maxChars = Number(chat.dataset.maxChars);
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("content");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const status = document.getElementById("status");
  const count = document.getElementById("count");
  const announcer = document.getElementById("announce");
  // On touch screens Enter types a new line (there is no Shift key); the Send button sends.
  const touch = window.matchMedia("(pointer: coarse)").matches;
  let busy = false;
  let stopRequest = null; // () => Promise: stops the reply this tab is streaming

  if (touch) input.placeholder = "Type a message";

  // The page counts characters as the server does: code points, so an emoji is one, not two.
  const length = (text) => [...text].length;

  function setStatus(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function updateControls() {
    const used = length(input.value);
    const tooLong = used > maxChars;
    count.textContent = used > maxChars * 0.8 ? `${used.toLocaleString()} / ${maxChars.toLocaleString()}` : "";
    count.classList.toggle("over", tooLong);
    sendButton.disabled = busy || !input.value.trim();
    stopButton.hidden = !busy;
    sendButton.hidden = busy;
  }

  function nearEnd() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  }

  // The end of the page, not the last message's bottom edge: that would sit under the sticky message box.
  function scrollToEnd() {
    window.scrollTo({ top: document.documentElement.scrollHeight, behavior: "instant" });
  }

  function announce(text) {
    announcer.textContent = text.length > 600 ? `${text.slice(0, 600)}…` : text;
  }

  function copyButton(label, getText) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy secondary small";
    button.textContent = label;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(getText());
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = label), 2000);
    });
    return button;
  }

  // Copy buttons for the answer and each code block, and Regenerate on the chat's last answer.
  function decorate(item) {
    if (!item.classList.contains("assistant")) return;
    item.querySelector(".actions")?.remove();
    const content = item.querySelector(".content");
    if (!content || item.classList.contains("streaming") || item.classList.contains("failed")) return;
    for (const pre of content.querySelectorAll("pre")) {
      if (pre.parentElement.classList.contains("code")) continue;
      const wrap = document.createElement("div");
      wrap.className = "code";
      pre.replaceWith(wrap);
      wrap.append(copyButton("Copy code", () => pre.textContent), pre);
    }
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(copyButton("Copy", () => content.innerText));
    if (item === list.lastElementChild && item.dataset.questionId) {
      const again = document.createElement("button");
      again.type = "button";
      again.className = "regenerate secondary small";
      again.dataset.messageId = item.dataset.questionId;
      again.textContent = "Regenerate";
      actions.append(again);
    }
    item.append(actions);
  }

  function redecorate() {
    for (const item of list.querySelectorAll("li.msg.assistant")) decorate(item);
  }

  function bubble(role, text, position) {
    document.getElementById("empty")?.remove();
    const item = document.createElement("li");
    item.className = `msg ${role}`;
    if (position !== undefined) item.dataset.position = String(position);
    const label = document.createElement("div");
    label.className = "role";
    label.textContent = role === "user" ? "You" : "Assistant";
    const content = document.createElement("div");
    content.className = "content";
    content.dir = "auto";
    content.textContent = text;
    item.append(label, content);
    // In order of position: a message from another tab may arrive after this tab's own.
    const later = position === undefined ? null
      : [...list.children].find((other) => Number(other.dataset.position) > position);
    list.insertBefore(item, later ?? null);
    return item;
  }

  function note(item, text, retryMessageId, label = "Retry") {
    item.querySelector(".note")?.remove();
    const box = document.createElement("div");
    box.className = "note";
    box.textContent = text + " ";
    if (retryMessageId) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retry";
      button.dataset.messageId = String(retryMessageId);
      button.textContent = label;
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

  // A stored answer: its sanitised HTML, its state, its buttons.
  function showMessage(item, message) {
    item.dataset.id = message.id;
    item.dataset.position = message.position;
    item.classList.remove("streaming", "pending", "failed", "incomplete", "stopped");
    let content = item.querySelector(".content");
    if (!content) {
      content = document.createElement("div");
      content.className = "content";
      content.dir = "auto";
      item.querySelector(".role").after(content);
    }
    content.classList.add("markdown");
    content.innerHTML = message.html; // sanitised on the server
    item.querySelector(".note")?.remove();
    if (!message.complete) {
      item.classList.add("incomplete");
      if (message.stopped) item.classList.add("stopped");
    }
  }

  function showFailure(item, data, previous) {
    item.classList.remove("streaming", "pending");
    if (data.partial) {
      showMessage(item, data.partial);
      const what = data.code === "stopped" ? "Stopped." : `This reply was cut short: ${data.message}`;
      note(item, what, data.retry_message_id);
    } else if (previous) {
      // A retry or regenerate that failed before any text: the earlier text is still stored; keep it.
      item.querySelector(".content").replaceWith(previous);
      item.classList.add("incomplete");
      note(item, data.code === "stopped" ? "Stopped." : data.message, data.retry_message_id);
    } else {
      item.classList.add("failed");
      item.classList.toggle("stopped", data.code === "stopped");
      item.querySelector(".content")?.remove();
      note(item, data.code === "stopped" ? "Stopped." : data.message, data.retry_message_id);
    }
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

  // Stream one reply into `item` (an assistant bubble). `previous`: the content element it replaces,
  // shown again if the new reply fails before any text. Resolves when the stream ends, whatever happened.
  async function streamReply(response, item, previous, onUser) {
    item.classList.add("streaming");
    item.classList.remove("failed", "incomplete", "stopped");
    item.querySelector(".actions")?.remove();
    let content = item.querySelector(".content");
    let finished = false;
    let started = false;
    try {
      await readEvents(response, (name, data) => {
        if (name === "user") {
          item.dataset.position = data.message.position + 1;
          item.dataset.questionId = data.message.id;
          onUser?.(data);
        } else if (name === "token") {
          if (!started) {
            started = true;
            item.querySelector(".note")?.remove();
            const fresh = document.createElement("div");
            fresh.className = "content";
            fresh.dir = "auto";
            if (content) content.replaceWith(fresh);
            else item.querySelector(".role").after(fresh);
            content = fresh;
          }
          const follow = nearEnd();
          content.append(data.text);
          if (follow) scrollToEnd();
        } else if (name === "html" && started) {
          // The text so far as Markdown (sanitised on the server); the next tokens follow it as text.
          content.classList.add("markdown");
          content.innerHTML = data.html;
        } else if (name === "done") {
          finished = true;
          showMessage(item, data.message);
          announce(`Assistant: ${data.message.content}`);
        } else if (name === "error") {
          finished = true;
          showFailure(item, data, started ? null : previous);
          announce(data.code === "stopped" ? "Stopped." : data.message);
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
    redecorate();
  }

  function beginReply() {
    busy = true;
    updateControls();
  }

  function endReply() {
    busy = false;
    stopRequest = null;
    setStatus("");
    updateControls();
    input.focus();
    scrollToEnd();
  }

  async function send(text) {
    beginReply();
    setStatus("Sending…");
    const mine = bubble("user", text);
    mine.classList.add("sending");
    scrollToEnd();
    input.value = "";
    updateControls();
    let response;
    try {
      response = await request("POST", `/api/chats/${chatId}/messages`, { content: text }, "text/event-stream");
    } catch (error) {
      // Nothing was stored: give the text back so the person can fix it and send again.
      mine.remove();
      input.value = text;
      endReply();
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
      return;
    }
    setStatus("Writing…");
    const reply = bubble("assistant", "");
    scrollToEnd();
    let questionId = null;
    let stopWanted = false;
    stopRequest = () => {
      stopWanted = true;
      return questionId ? stopReply(questionId) : Promise.resolve();
    };
    await streamReply(response, reply, null, (data) => {
      mine.classList.remove("sending");
      mine.dataset.id = data.message.id;
      mine.dataset.position = data.message.position;
      questionId = data.message.id;
      setTitle(data.chat_title);
      if (stopWanted) stopReply(questionId);
    });
    endReply();
  }

  async function stopReply(questionId) {
    try {
      await request("POST", `/api/chats/${chatId}/messages/${questionId}/stop`, {});
    } catch (error) {
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
    }
  }

  // Retry a missing or cut-short reply, or regenerate the last answer: the same stream, another URL.
  async function answerAgain(button, action) {
    const item = button.closest("li.msg");
    const messageId = button.dataset.messageId;
    button.disabled = true;
    beginReply();
    setStatus(action === "regenerate" ? "Writing a new answer…" : "Retrying…");
    let response;
    try {
      response = await request("POST", `/api/chats/${chatId}/messages/${messageId}/${action}`, {}, "text/event-stream");
    } catch (error) {
      button.disabled = false;
      endReply();
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
      return;
    }
    stopRequest = () => stopReply(messageId);
    const previous = item.querySelector(".content");
    await streamReply(response, item, previous);
    endReply();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (busy || !text.trim()) return;
    const used = length(text);
    if (used > maxChars) {
      setStatus(`Your message is ${used.toLocaleString()} characters long; the limit is ${maxChars.toLocaleString()}. Shorten it to send.`, true);
      return;
    }
    send(text);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touch) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  input.addEventListener("input", () => {
    if (status.classList.contains("error")) setStatus("");
    updateControls();
  });

  stopButton.addEventListener("click", () => {
    stopButton.disabled = true;
    setStatus("Stopping…");
    Promise.resolve(stopRequest?.()).finally(() => (stopButton.disabled = false));
  });

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button.retry, button.regenerate");
    if (!button || button.disabled || busy) return;
    answerAgain(button, button.classList.contains("retry") ? "retry" : "regenerate");
  });

  // Rename in place.
  const renameForm = document.getElementById("rename-form");
  const renameInput = document.getElementById("rename-input");
  const title = document.getElementById("chat-title");
  function editing(on) {
    renameForm.hidden = !on;
    title.hidden = on;
    document.getElementById("rename").hidden = on;
  }
  document.getElementById("rename").addEventListener("click", () => {
    renameInput.value = title.textContent;
    editing(true);
    renameInput.focus();
    renameInput.select();
  });
  document.getElementById("rename-cancel").addEventListener("click", () => editing(false));
  renameForm.addEventListener("keydown", (event) => event.key === "Escape" && editing(false));
  renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await request("PATCH", `/api/chats/${chatId}`, { title: renameInput.value });
      setTitle((await response.json()).chat.title);
      editing(false);
      document.getElementById("rename").focus();
    } catch (error) {
      setStatus(error instanceof RequestError ? error.message : "Could not reach the chat server.", true);
    }
  });

  // Live: replies still being written (after a reload) and messages sent from other tabs.
  function rowAt(position) {
    return list.querySelector(`li.msg[data-position="${position}"]`);
  }

  function liveReply(position, questionId) {
    let item = rowAt(position);
    if (!item) item = bubble("assistant", "", position);
    if (questionId) item.dataset.questionId = questionId;
    if (!item.querySelector(".content")) {
      const content = document.createElement("div");
      content.className = "content";
      content.dir = "auto";
      item.querySelector(".role").after(content);
    }
    item.querySelector(".note")?.remove();
    item.querySelector(".actions")?.remove();
    item.classList.remove("failed", "incomplete", "stopped", "pending");
    item.classList.add("streaming");
    return item;
  }

  // What was stored before the live stream (re)connected: messages from other tabs, and replies that were
  // being written when the page was rendered but finished before the stream opened.
  async function reconcile() {
    if (busy) return; // this tab's own send is in flight; its stream shows it
    let messages;
    try {
      messages = (await (await fetch(`/api/chats/${chatId}/messages`, { credentials: "same-origin" })).json()).messages;
    } catch {
      return;
    }
    for (const message of messages) {
      const row = rowAt(message.position);
      if (row && (row.dataset.id === String(message.id) || row.classList.contains("streaming") && !row.classList.contains("pending"))) continue;
      const item = row ?? bubble(message.role, message.content, message.position);
      if (message.role === "assistant") showMessage(item, message);
      else item.dataset.id = message.id;
    }
    redecorate();
  }

  const live = new EventSource(`/api/chats/${chatId}/live?tab=${tabId}`);
  const on = (name, handle) => live.addEventListener(name, (event) => handle(JSON.parse(event.data)));
  on("hello", () => reconcile());
  on("user", (data) => {
    if (list.querySelector(`li.msg[data-id="${data.message.id}"]`)) return;
    const follow = nearEnd();
    const item = bubble("user", data.message.content, data.message.position);
    item.dataset.id = data.message.id;
    setTitle(data.chat_title);
    if (follow) scrollToEnd();
  });
  on("reply", (data) => {
    const follow = nearEnd();
    liveReply(data.position, data.question_id).querySelector(".content").textContent = data.text;
    if (follow) scrollToEnd();
  });
  on("token", (data) => {
    const follow = nearEnd();
    const item = rowAt(data.position);
    (item?.classList.contains("streaming") ? item : liveReply(data.position)).querySelector(".content").append(data.text);
    if (follow) scrollToEnd();
  });
  on("html", (data) => {
    const item = rowAt(data.position);
    if (!item?.classList.contains("streaming")) return;
    const content = item.querySelector(".content");
    content.classList.add("markdown");
    content.innerHTML = data.html; // sanitised on the server
  });
  on("message", (data) => {
    const item = rowAt(data.message.position) ?? bubble("assistant", "", data.message.position);
    showMessage(item, data.message);
    redecorate();
    announce(`Assistant: ${data.message.content}`);
  });
  on("failed", (data) => {
    const item = rowAt(data.position);
    if (item) {
      showFailure(item, data, null);
      redecorate();
    }
  });
  on("renamed", (data) => setTitle(data.title));
  on("deleted", () => {
    live.close();
    busy = true;
    updateControls();
    sendButton.hidden = true;
    setStatus("This chat was deleted in another tab.", true);
  });
  on("overflow", () => window.location.reload());
  window.addEventListener("pagehide", () => live.close());

  redecorate();
  updateControls();
  scrollToEnd();
  input.focus();
})();
