"""The shop's help centre: twelve short articles and a deterministic keyword search over them.

The search is term overlap, not BM25 or embeddings, on purpose: with twelve articles it finds the
right one, its ranking can be worked out by hand (a test does), and it needs no index or model.
A query term found in an article's title scores `TITLE_WEIGHT`, one found only in its body scores
`BODY_WEIGHT`; stop-words do not count; ties keep the articles' order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TITLE_WEIGHT = 3
BODY_WEIGHT = 1

_WORD = re.compile(r"[a-z0-9]+")

# One word list reads better than a hundred-line list literal.
_STOP_WORDS = frozenset(
    """
    a about after all am an and any are as at be been before but by can could did do does doing
    for from get got had has have having he her here hi him his how i if in into is it its just
    me my myself no not of on or our ours please she so some than that the their them then there
    these they this those to too up us very was we were what when where which while who why will
    with would you your yours hello thanks thank want wants need needs help
    """.split()  # noqa: SIM905
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Article:
    """One help-centre article."""

    id: str
    title: str
    body: str


ARTICLES: tuple[Article, ...] = (
    Article(
        id="kb-password-reset",
        title="Resetting your password",
        body=(
            "Choose 'Forgot password' on the sign-in page and enter the email address of your "
            "account. We send a reset link that is valid for 30 minutes. If no email arrives, "
            "check your spam folder or ask us to send it again."
        ),
    ),
    Article(
        id="kb-shipping-times",
        title="Shipping times and delivery",
        body=(
            "Orders placed before 14:00 on a working day leave our warehouse the same day. "
            "Delivery within Germany takes 1 to 3 working days; the rest of the EU 3 to 5. "
            "You get a tracking number by email as soon as your parcel ships."
        ),
    ),
    Article(
        id="kb-return-policy",
        title="Return policy",
        body=(
            "You may return unused items within 30 days of delivery. Start a return from your "
            "order page, print the label and drop the parcel at any DHL point. Return shipping "
            "is free within the EU."
        ),
    ),
    Article(
        id="kb-refund-timelines",
        title="When will I get my refund?",
        body=(
            "Once a refund is issued, the money goes back to the original payment method. Cards "
            "and PayPal show it within 5 to 10 working days; bank transfers within 3 working days."
        ),
    ),
    Article(
        id="kb-damaged-items",
        title="Damaged or broken items",
        body=(
            "If an item arrives damaged or broken, keep the packaging and take a photo of the "
            "damage. Contact our support team within 14 days of delivery and we will send a "
            "replacement or refund the item."
        ),
    ),
    Article(
        id="kb-change-address",
        title="Changing your delivery address",
        body=(
            "You can change the delivery address of an order until it ships, from your order "
            "page. Once a parcel has shipped, ask the carrier to redirect it using the tracking "
            "number."
        ),
    ),
    Article(
        id="kb-cancel-order",
        title="Cancelling an order",
        body=(
            "Orders that have not shipped can be cancelled from your order page, and the payment "
            "is refunded in full. A shipped order cannot be cancelled; return it instead."
        ),
    ),
    Article(
        id="kb-payment-methods",
        title="Payment methods",
        body=(
            "We accept Visa, Mastercard, American Express, PayPal and bank transfer. Orders paid "
            "by bank transfer ship once the payment arrives, usually within 2 working days."
        ),
    ),
    Article(
        id="kb-international-shipping",
        title="International shipping",
        body=(
            "We ship to the UK, Switzerland, Norway and the United States. Orders outside the EU "
            "take 5 to 10 working days and may be charged import duties by your country."
        ),
    ),
    Article(
        id="kb-warranty",
        title="Warranty on machines and grinders",
        body=(
            "Espresso machines, kettles and grinders carry a two-year warranty against defects. "
            "Keep your order number; we repair or replace a faulty appliance free of charge."
        ),
    ),
    Article(
        id="kb-gift-cards",
        title="Gift cards",
        body=(
            "Gift cards are sent by email and valid for three years. Enter the code at checkout; "
            "any balance left stays on the card. Gift cards cannot be exchanged for cash."
        ),
    ),
    Article(
        id="kb-contact-support",
        title="Contacting our support team",
        body=(
            "Our support team answers on working days from 8:00 to 18:00. To talk to a human, "
            "ask this assistant to pass your request on, or write to support@example.com."
        ),
    ),
)


def terms(text: str) -> frozenset[str]:
    """The distinct search terms of `text`: lower-cased words, stop-words dropped, crudely stemmed.

    The stemmer only strips a few English endings ("-ing", "-ed", "-es", "-s", "-e") and a doubled
    final consonant, so that "shipping", "shipped" and "ship" or "damaged" and "damage" meet;
    it is not Porter, but it is enough for twelve articles and easy to predict.
    """
    return frozenset(_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeious":
        word = word[:-1]
    return word


def score(article: Article, query_terms: frozenset[str]) -> int:
    """How well `article` matches `query_terms` (higher is better, 0 is no match).

    Each query term scores `TITLE_WEIGHT` if it is in the title, else `BODY_WEIGHT` if it is in
    the body: a title says what an article is about, a body only mentions things.
    """
    title, body = terms(article.title), terms(article.body)
    return sum(
        TITLE_WEIGHT if term in title else BODY_WEIGHT if term in body else 0
        for term in query_terms
    )


def search(query: str, limit: int = 3) -> list[Article]:
    """The at most `limit` articles that best match `query`, best first.

    An empty query, one made only of stop-words, or one that matches nothing gives an empty list.
    """
    if limit <= 0:
        return []
    query_terms = terms(query)
    scored = [(score(article, query_terms), index) for index, article in enumerate(ARTICLES)]
    ranked = sorted((item for item in scored if item[0] > 0), key=lambda item: (-item[0], item[1]))
    return [ARTICLES[index] for _, index in ranked[:limit]]


def get(article_id: str) -> Article:
    """The article with `article_id`.

    Raises:
        KeyError: no such article.
    """
    for article in ARTICLES:
        if article.id == article_id:
            return article
    raise KeyError(f"no help article {article_id!r}")
