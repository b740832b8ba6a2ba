"""The numbers of a build's reports, as lines for the terminal."""
from __future__ import annotations


def summary_lines(component: str, report: dict) -> list[str]:
    if component == "tokenizer":
        return [f"tokenizer: {report['vocab_size']} tokens from worlds {report['worlds']}; "
                f"{report['single_token_word_share']:.0%} of corpus words are one token"]
    if component == "lm":
        evaluation = report["evaluation"]
        qa = evaluation["qa_accuracy"]
        captions = evaluation["captions_from_bos"]
        lines = [
            f"LM: {report['parameters']:,} parameters, {report['settings']['steps']} steps in "
            f"{report['timing']['training']['wall_seconds']:.0f} s, loss {report['loss_first_20_steps']:.3f} -> "
            f"{report['loss_last_20_steps']:.3f}",
            f"  QA accuracy on {evaluation['held_out_questions']} held-out questions: with the caption "
            f"{qa['caption']['overall']:.1%}, with keywords {qa['keywords']['overall']:.1%}, blind "
            f"{qa['blind']['overall']:.1%} (majority answer {evaluation['chance']['majority_answer']:.1%}, "
            f"uniform guess {evaluation['chance']['uniform_guess']:.1%})",
        ]
        worlds = sorted(k for k in qa["caption"] if "/" not in k and k != "overall")
        for world in worlds:
            lines.append(f"    {world}: caption {qa['caption'][world]:.1%}, keywords {qa['keywords'][world]:.1%}, "
                         f"blind {qa['blind'][world]:.1%}")
        lines.append(f"  captions from BOS: greedy {captions['greedy']!r} (well-formed for "
                     f"{'+'.join(captions['greedy_well_formed_for']) or 'no world'}); {captions['sampled_well_formed']:.1%} of "
                     f"{captions['sampled']} sampled are well-formed")
        return lines
    # The encoders: the ViT's report counts images and keeps its step count at the top of its settings.
    name = {"vit": "ViT", "timesformer": "TimeSformer", "ast": "AST", "sensor": "sensor encoder"}[component]
    steps = report["settings"]["steps"] if component == "vit" else report["settings"]["training"]["steps"]
    held_out = {"vit": f"{report.get('held_out_images')} images", "sensor": f"{report.get('held_out_traces')} traces"
                }.get(component, f"{report.get('held_out_clips')} clips")
    return [
        f"{name}: {report['parameters']:,} parameters, {steps} steps in "
        f"{report['timing']['training']['wall_seconds']:.0f} s, loss {report['loss_first_20_steps']:.3f} -> "
        f"{report['loss_last_20_steps']:.3f}",
        f"  held-out head accuracy ({held_out}): "
        + ", ".join(f"{a} {v:.1%}" for a, v in report["held_out_head_accuracy"].items()),
        *(f"  linear probe, CLS of block {block}: " + ", ".join(f"{a} {v:.1%}" for a, v in accuracies.items())
          for block, accuracies in report["linear_probe_accuracy"].items()),
    ]
