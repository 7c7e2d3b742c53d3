"""Values a database can store, checked where Pydantic validates a request, before they reach it."""

from __future__ import annotations

import databases
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def storable_in(database: databases.Database) -> AfterValidator:
    """Return the check that a ``str`` is storable in ``database``: ``Annotated[str, storable_in(database)]``.

    Text with a lone surrogate cannot be encoded to UTF-8 for any database, and PostgreSQL cannot store NUL; FastAPI's
    version answers both with a 500.
    """
    refuse_nul = database.url.dialect == "postgresql"

    def check(text: str) -> str:
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise PydanticCustomError("string_unicode", "Input should be a valid string without lone surrogates")
        if refuse_nul and "\x00" in text:
            raise PydanticCustomError("string_nul", "Input should be a string without NUL characters")
        return text

    return AfterValidator(check)
