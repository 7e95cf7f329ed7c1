//! Text prompts (`deva track --prompt`): split into phrases, tokenised into the caption with
//! each phrase's token span, and the phrase-block attention masks of the tokens the model
//! reads. The tokenizer is the `tokenizer.json` named by `DEVA_FUZZ_TOKENIZER` (scripts/fuzz.sh
//! sets it to the Grounding-DINO fixture's).
#![no_main]

use deva::segmenter::grounded::{phrase_masks, split_prompt, Caption, TextTokenizer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Grounding-DINO's text length (`max_text_len`).
const MAX_TEXT_LEN: usize = 256;

fn tokenizer() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = std::env::var_os("DEVA_FUZZ_TOKENIZER")
            .expect("set DEVA_FUZZ_TOKENIZER to a tokenizer.json");
        TextTokenizer::from_file(std::path::Path::new(&path)).expect("DEVA_FUZZ_TOKENIZER")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(prompt) = std::str::from_utf8(data) else {
        return;
    };
    let phrases = split_prompt(prompt);
    let Ok(caption) = Caption::new(tokenizer(), &phrases) else {
        return;
    };
    assert_eq!(caption.spans.len(), phrases.len());
    let ids = &caption.tokens.ids[0];
    let keep = ids.len().min(MAX_TEXT_LEN);
    let (mask, positions) = phrase_masks(ids, keep);
    assert_eq!((mask.len(), positions.len()), (keep * keep, keep));
    let _ = tokenizer().decode(ids);
});
