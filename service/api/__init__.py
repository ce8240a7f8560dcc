"""The HTTP layer: the aiohttp app (`create_app`), its routes, views, checks and answers.

Nothing here builds a Redis key or calls Redis: views ask the store (`service.store`).
"""
