"""The chat app: sessions, many chats, PostgreSQL history, replies streamed through the gateway.

`python -m chat_client` serves it; `chat_client.app.create_app(settings)` builds it.
"""
