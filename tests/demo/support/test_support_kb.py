from __future__ import annotations

import itertools

import pytest

from bastion.demo.support import kb


def ids(articles: list[kb.Article]) -> list[str]:
    return [article.id for article in articles]


def test_twelve_articles_with_unique_ids_titles_and_bodies() -> None:
    assert len(kb.ARTICLES) == 12
    assert len({article.id for article in kb.ARTICLES}) == 12
    assert all(article.title and article.body for article in kb.ARTICLES)
    topics = " ".join(article.title.lower() for article in kb.ARTICLES)
    for topic in (
        "password",
        "shipping times",
        "return",
        "refund",
        "damaged",
        "address",
        "cancelling",
        "payment",
        "international",
        "warranty",
        "gift card",
        "support",
    ):
        assert topic in topics


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("How do I reset my password?", "kb-password-reset"),
        ("my parcel arrived damaged", "kb-damaged-items"),
        ("When will I get my refund?", "kb-refund-timelines"),
        ("Can I cancel an order?", "kb-cancel-order"),
        ("change the delivery address", "kb-change-address"),
        ("do you ship to the UK? international", "kb-international-shipping"),
        ("which payment methods do you accept", "kb-payment-methods"),
        ("gift card balance", "kb-gift-cards"),
        ("warranty on my grinder", "kb-warranty"),
        ("I want to talk to a human", "kb-contact-support"),
        ("return policy", "kb-return-policy"),
        ("how long does shipping take", "kb-shipping-times"),
    ],
)
def test_search_finds_the_right_article_first(query: str, best: str) -> None:
    assert ids(kb.search(query))[0] == best


def test_title_words_weigh_more_than_body_words() -> None:
    # "warranty" is in one title; "defects" only in that body; "faulty" only in that body too.
    warranty = kb.get("kb-warranty")
    assert kb.score(warranty, kb.terms("warranty")) == kb.TITLE_WEIGHT
    assert kb.score(warranty, kb.terms("defects")) == kb.BODY_WEIGHT
    # "refund" is the title of kb-refund-timelines but only body text elsewhere.
    ranked = kb.search("refund", limit=12)
    assert ranked[0].id == "kb-refund-timelines"
    assert {a.id for a in ranked[1:]} >= {"kb-damaged-items", "kb-cancel-order"}


def test_ranking_is_by_score_then_article_order() -> None:
    query = kb.terms("shipping")
    ranked = kb.search("shipping", limit=12)
    scores = [kb.score(article, query) for article in ranked]
    assert scores == sorted(scores, reverse=True)
    order = {article.id: n for n, article in enumerate(kb.ARTICLES)}
    for before, after in itertools.pairwise(ranked):
        if kb.score(before, query) == kb.score(after, query):
            assert order[before.id] < order[after.id]
    # Both titles say "shipping": the tie goes to the article listed first.
    assert ids(ranked)[:2] == ["kb-shipping-times", "kb-international-shipping"]


def test_search_is_deterministic_and_limited() -> None:
    assert kb.search("order shipping refund", limit=2) == kb.search("order shipping refund", 2)
    assert len(kb.search("order shipping refund", limit=2)) == 2
    assert len(kb.search("order shipping refund")) == 3
    assert kb.search("order", limit=0) == []


@pytest.mark.parametrize("query", ["", "   ", "the and of you", "xyzzy plugh", "?!"])
def test_empty_stop_words_only_or_unmatched_queries_find_nothing(query: str) -> None:
    assert kb.search(query) == []


def test_terms_drop_stop_words_and_stem_endings() -> None:
    assert kb.terms("How do I reset my Password?") == {"reset", "password"}
    assert kb.terms("shipped shipping ships") == {"ship"}
    assert kb.terms("damaged damage") == {"damag"}
    assert kb.terms("cancelled cancelling") == {"cancel"}
    assert kb.terms("address addresses") == {"address"}


def test_get_unknown_article_raises() -> None:
    with pytest.raises(KeyError, match="no help article 'kb-nope'"):
        kb.get("kb-nope")
