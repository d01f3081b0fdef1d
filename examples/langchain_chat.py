"""LangChain's ChatOpenAI over an attested Shroud session (``pip install shroud-sdk[langchain]``).

ChatOpenAI builds two ``openai`` clients, a sync one for ``invoke``/``stream`` and an async one
for ``ainvoke``/``astream``. Give it both attested httpx clients: one given only the sync
client would build its own async client for ``ainvoke``. (That client would then fail, since
``base_url`` names the bridge by a name that never resolves, but it would not be attested.)
"""

import asyncio
import os

from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from shroud_sdk import ShroudClients


async def main() -> None:
    # SHROUD_BRIDGE_URL, SHROUD_API_KEY and SHROUD_POLICY configure it, as for shroud_sdk.OpenAI.
    async with ShroudClients() as shroud:
        llm = ChatOpenAI(
            model=os.environ.get("SHROUD_MODEL", "shroud-demo-echo"),
            base_url=shroud.base_url,
            api_key=SecretStr(shroud.api_key),
            http_client=shroud.http_client,
            http_async_client=shroud.async_http_client,
            max_retries=0,
        )
        print(llm.invoke("Hello from LangChain").content)
        print((await llm.ainvoke("Hello again, asynchronously")).content)
        print("attested:", shroud.attestation is not None)


asyncio.run(main())
