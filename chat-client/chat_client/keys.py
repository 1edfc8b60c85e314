"""Typed keys of everything the app holds for its lifetime."""

from aiohttp import web

from chat_client.live import ChatFeed
from chat_client.llm import ChatModel
from chat_client.ratelimit import Limits
from chat_client.replies import ReplyWriter
from chat_client.settings import ChatSettings
from chat_client.store import ChatStore

settings_key = web.AppKey("settings", ChatSettings)
store_key = web.AppKey("store", ChatStore)
model_key = web.AppKey("model", ChatModel)
replies_key = web.AppKey("replies", ReplyWriter)
feed_key = web.AppKey("feed", ChatFeed)
limits_key = web.AppKey("limits", Limits)
