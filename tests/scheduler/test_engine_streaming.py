"""Streaming deltas, stop strings across tokens, aborts freeing pages, and the asyncio API."""

import asyncio
import threading

from astrai.scheduler import SamplingParams

from .conftest import settle

GREEDY = dict(temperature=0.0, ignore_eos=True)


def collect(stream):
    deltas = list(stream)
    assert deltas and deltas[-1].finished and not any(d.finished for d in deltas[:-1])
    return deltas


def test_deltas_concatenate_to_final_text_with_multibyte_characters(engine):
    prompt = "Emoji list: 😀 😃 😄"
    params = SamplingParams(max_tokens=16, **GREEDY)
    final = engine.generate([prompt], params)[0]
    assert any(ord(ch) > 0x2FFF for ch in final.text), final.text  # multi-byte output really happened
    deltas = collect(engine.stream(prompt, params))
    assert "".join(d.text for d in deltas) == final.text
    assert [t for d in deltas for t in d.token_ids] == final.token_ids
    assert all("\ufffd" not in d.text for d in deltas[:-1])  # never half a character mid-stream
    assert deltas[-1].finish_reason == "length" and deltas[-1].metrics.num_generation_tokens == 16


def test_stop_string_spanning_tokens_is_cut_in_stream_and_final(engine, prompts):
    tok = engine.tokenizer
    full = engine.generate([prompts[9]], SamplingParams(max_tokens=24, **GREEDY))[0]
    pieces = [tok.decode(full.token_ids[:i]) for i in range(len(full.token_ids) + 1)]
    # a stop string made of the last 2 chars of token k and the first 2 of token k+1
    k = next(
        i for i in range(2, len(full.token_ids) - 1)
        if len(pieces[i]) - len(pieces[i - 1]) >= 2 and len(pieces[i + 1]) - len(pieces[i]) >= 2
    )
    at = len(pieces[k]) - 2
    stop = pieces[k + 1][at : at + 4]
    expected = full.text[: full.text.index(stop)]
    params = SamplingParams(max_tokens=24, stop=[stop], **GREEDY)
    final = engine.generate([prompts[9]], params)[0]
    assert final.text == expected and final.finish_reason == "stop" and final.stop_reason == stop
    deltas = collect(engine.stream(prompts[9], params))
    assert "".join(d.text for d in deltas) == expected
    assert deltas[-1].finish_reason == "stop"
    assert stop not in "".join(d.text for d in deltas)
    settle(engine)


def test_abort_mid_stream_frees_pages_within_one_step(engine, prompts):
    events = []
    unsubscribe = engine.subscribe(events.append)
    background = threading.Thread(
        target=engine.generate, args=([prompts[2]], SamplingParams(max_tokens=40, **GREEDY))
    )
    background.start()
    stream = engine.stream(prompts[7], SamplingParams(max_tokens=200, **GREEDY), request_id="to-abort")
    for i, delta in enumerate(stream):
        assert not delta.finished
        if i == 2:
            break
    stream.close()  # leaving the loop aborts the request
    in_progress = engine.stats()["steps"]  # index of the step running now (or next to run)
    background.join()
    unsubscribe()
    done = [ev for ev in events if any(f["request_id"] == "to-abort" for f in ev.finished)]
    assert len(done) == 1
    assert done[0].finished[[f["request_id"] for f in done[0].finished].index("to-abort")]["finish_reason"] == "abort"
    assert done[0].step <= in_progress + 1  # handled by the next step at the latest
    assert "to-abort" not in done[0].page_tables
    held = next(ev for ev in reversed(events) if "to-abort" in ev.page_tables).page_tables["to-abort"]
    kept = set(held) - set(done[0].pages["freed"])
    assert len(kept) <= len(prompts[7]) // engine.kv.page_size  # only the cached prompt pages stay
    assert not engine.kv.has_sequence("to-abort")
    settle(engine)


def test_async_api_serves_fifty_concurrent_consumers(engine, prompts, greedy_alone):
    params = SamplingParams(max_tokens=6, **GREEDY)
    expected = [greedy_alone[i % 16][:6] for i in range(50)]

    async def consume(i):
        ids, text, last = [], "", None
        async for delta in engine.generate_async(prompts[i % 16], params):
            ids += delta.token_ids
            text += delta.text
            last = delta
        return ids, text, last

    async def main():
        return await asyncio.gather(*(consume(i) for i in range(50)))

    results = asyncio.run(main())
    assert [ids for ids, _, _ in results] == expected
    assert all(last.finished and last.finish_reason == "length" for _, _, last in results)
    assert all(text == engine.tokenizer.decode(ids) for ids, text, _ in results)
    settle(engine)


def test_cancelling_an_async_consumer_aborts_its_request(engine, prompts):
    async def main():
        started = asyncio.Event()

        async def consume():
            async for _ in engine.generate_async(prompts[4], SamplingParams(max_tokens=500, **GREEDY), request_id="cancel-me"):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    settle(engine)
    assert not engine.kv.has_sequence("cancel-me")
    assert engine.stats()["num_running"] == 0
