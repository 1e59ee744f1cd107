"""`scenemind train decoder|interpreter|field-decoder`: LoRA / QLoRA adapters and the field decoder."""

from __future__ import annotations

import argparse
import json

from state.errors import DecoderConfigError


def cmd_train(args: argparse.Namespace) -> int:
    if args.task == "field-decoder":
        from adapters.field_decoder import train_field_decoder

        if not args.corpus:
            raise DecoderConfigError("train field-decoder needs --corpus FILE (json list of {title,text}, jsonl or txt)")
        report = train_field_decoder(args.corpus, args.base, args.out, embedder_spec=args.embedder,
                                     epochs=args.epochs or 5, lr=args.lr or 2e-3,
                                     batch_size=args.batch_size, holdout=args.holdout, hidden=args.hidden,
                                     layers=args.layers, vocab=args.vocab, limit=args.limit, threads=args.threads,
                                     prototypes=args.prototypes,
                                     progress=not args.quiet)
        print(json.dumps(report))
        print(f"field decoder saved to {args.out}: use it with --decoder field:{args.out}; "
              f"measure it with python -m evals.field_decoder --model {args.out}")
        return 0
    from adapters.training import train_adapter

    if not args.data:
        raise DecoderConfigError(f"train {args.task} needs --data FILE.jsonl (formats in the README)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = train_adapter(args.task, args.data, args.base, args.out, qlora=args.qlora, epochs=args.epochs or 3,
                           lr=args.lr or 2e-4, rank=args.rank, max_length=args.max_length, max_steps=args.max_steps,
                           progress=not args.quiet)
    print(json.dumps(report.__dict__))
    use = "--decoder hf:" if args.task == "decoder" else "SCENEMIND_INTERPRETER="
    print(f"adapter saved to {report.out} (loss {report.first_loss} -> {report.final_loss}); use it with {use}{report.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand to the scenemind parser."""
    tr = sub.add_parser("train", help="train a LoRA/QLoRA decoder or interpreter adapter, or the field decoder",
                        description="decoder: (scenes + question -> answer); interpreter: (text -> scene JSON); "
                                    "field-decoder: (scene vector -> text).")
    tr.add_argument("task", choices=["decoder", "interpreter", "field-decoder"])
    tr.add_argument("--data", help="decoder / interpreter: training examples, .jsonl")
    tr.add_argument("--corpus", help="field-decoder: corpus (json list of {title,text}, jsonl, txt)")
    tr.add_argument("--base", required=True, help="local causal LM folder; field-decoder also takes 'tiny'")
    tr.add_argument("--out", required=True, help="folder for the adapter (safetensors)")
    tr.add_argument("--qlora", action="store_true", help="4-bit NF4 base (bitsandbytes): QLoRA")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--rank", type=int, default=8, help="LoRA rank")
    tr.add_argument("--max-length", type=int, default=1024, dest="max_length", help="tokens per example")
    tr.add_argument("--max-steps", type=int, dest="max_steps", help="stop after this many steps")
    tr.add_argument("--batch-size", type=int, default=32, dest="batch_size", help="field-decoder batch")
    tr.add_argument("--holdout", type=int, default=200, help="field-decoder: passages held out for evaluation")
    tr.add_argument("--hidden", type=int, default=192, help="field-decoder --base tiny: hidden size")
    tr.add_argument("--layers", type=int, default=3, help="field-decoder --base tiny: layers")
    tr.add_argument("--vocab", type=int, default=3072, help="field-decoder --base tiny: BPE vocabulary")
    tr.add_argument("--limit", type=int, help="field-decoder: use the first N sentences only")
    tr.add_argument("--prototypes", type=int, default=2,
                    help="field-decoder: nearest memory sentences it reads and edits (0: the vector alone)")
    tr.add_argument("--threads", type=int, help="torch threads (1 is often faster on a busy 2-core machine)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train)
