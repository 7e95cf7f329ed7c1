//! DEVA network modules against the official implementation: input normalisation, pixel
//! encoder, key projection, mask encoder, memory read and decoder, each on the recorded inputs
//! of `$DEVA_FIXTURES/deva_net/cases.safetensors` within the README's tolerances.

mod common;

use candle_core::{Device, Tensor};
use common::deva::{
    check, check_as, fixture_net, frame_from, host, max_abs_diff, size_tags, tokens, values,
    Tolerances,
};
use deva::mask::ObjectId;
use deva::nn::checkpoint;
use deva::propagator::deva::input::{normalized_padded, Padding};
use deva::propagator::deva::memory::{FrameKeys, Memory, MemorySettings};
use deva::propagator::deva::network::{KEY_DIM, VALUE_DIM};
use deva::propagator::deva::readout::{similarity, KeySet, Query, TopK};

#[test]
fn modules_match_the_reference() {
    let Some(dir) = common::fixtures("deva_net") else {
        return;
    };
    let cases = checkpoint::load(dir.join("cases.safetensors"), &[]).unwrap();
    let tol = Tolerances::load(&dir);
    let net = fixture_net(&dir);
    for tag in size_tags(&cases) {
        let get = |n: &str| common::deva::tensor(&cases, &format!("{tag}.{n}"));

        // Input: normalisation and padding.
        let (_, shape) = values(&cases, &format!("{tag}.image"));
        let (h, w) = (shape[2], shape[3]);
        let pad = Padding::new(w, h);
        let (want_pad, _) = values(&cases, &format!("{tag}.pad"));
        let ours_pad = [
            pad.left,
            pad.padded_width - w - pad.left,
            pad.top,
            pad.padded_height - h - pad.top,
        ];
        assert_eq!(
            ours_pad.map(|p| p as f32).to_vec(),
            want_pad,
            "{tag} padding"
        );
        let frame = frame_from(&values(&cases, &format!("{tag}.image")).0, w, h, 0);
        let norm = normalized_padded(&frame.image, &pad);
        let (want, _) = values(&cases, &format!("{tag}.image_norm_padded"));
        assert!(max_abs_diff(&norm, &want) <= 1e-6, "{tag} normalisation");

        // Pixel encoder and key projection.
        let f = net.encode_image(&get("image_norm_padded")).unwrap();
        let k = net.transform_key(&get("enc.key_feat")).unwrap();
        for (name, t) in [
            ("enc.f16", &f.f16),
            ("enc.f8", &f.f8),
            ("enc.f4", &f.f4),
            ("enc.key_feat", &f.key_feat),
            ("enc.key", &k.key),
            ("enc.shrinkage", &k.shrinkage),
            ("enc.selection", &k.selection),
        ] {
            check(&cases, &tol, &tag, name, &host(t));
        }

        // Mask encoder (values and deep sensory update) of both memory frames.
        for m in ["mem0", "mem1"] {
            let mf = net
                .encode_image(&get(&format!("{m}.image_norm_padded")))
                .unwrap();
            check(&cases, &tol, &tag, &format!("{m}.f16"), &host(&mf.f16));
            let masks = get(&format!("{m}.masks_padded"));
            let (_, n, hp, wp) = masks.dims4().unwrap();
            let masks = masks.reshape((n, 1, hp, wp)).unwrap();
            let sensory = get(&format!("{m}.sensory_in")).squeeze(0).unwrap();
            let (value, sensory) = net
                .encode_mask(
                    &get(&format!("{m}.image_norm_padded")),
                    &get(&format!("{m}.f16")),
                    &sensory,
                    &masks,
                    0,
                )
                .unwrap();
            check(&cases, &tol, &tag, &format!("{m}.value"), &host(&value));
            check(
                &cases,
                &tol,
                &tag,
                &format!("{m}.sensory_out"),
                &host(&sensory),
            );
            // Chunked encoding gives the same numbers.
            let (value1, _) = net
                .encode_mask(
                    &get(&format!("{m}.image_norm_padded")),
                    &get(&format!("{m}.f16")),
                    &get(&format!("{m}.sensory_in")).squeeze(0).unwrap(),
                    &masks,
                    1,
                )
                .unwrap();
            assert!(max_abs_diff(&host(&value1), &host(&value)) < 1e-4);
        }

        // Memory read: similarity, top-k affinity, readout through the memory store.
        let (mk, mk_shape) = values(&cases, &format!("{tag}.readout.memory_key"));
        let n_mem = mk_shape[1];
        let (ms, _) = values(&cases, &format!("{tag}.readout.memory_shrinkage"));
        let qk = tokens(
            &values(&cases, &format!("{tag}.readout.query_key")).0,
            KEY_DIM,
        );
        let qe = tokens(
            &values(&cases, &format!("{tag}.readout.query_selection")).0,
            KEY_DIM,
        );
        let hw = qk.len() / KEY_DIM;
        let mk_t = tokens(&mk, KEY_DIM);
        let set = KeySet {
            key: &mk_t,
            shrinkage: &ms,
        };
        let query = Query::new(&qk, &qe);
        let sim = similarity(&query, &[set]);
        check(&cases, &tol, &tag, "readout.similarity", &tokens(&sim, hw));
        let top = TopK::compute(&query, &[set], 30);
        check(&cases, &tol, &tag, "readout.affinity", &top.dense());

        let mut memory = Memory::new(MemorySettings {
            top_k: 30,
            max_frames: 10,
            min_frames: 5,
            max_long_term: 10000,
            prototypes: 128,
            long_term: true,
            count_long_term_usage: false,
        });
        for m in ["mem0", "mem1"] {
            let key = tokens(&values(&cases, &format!("{tag}.{m}.key")).0, KEY_DIM);
            let selection = tokens(&values(&cases, &format!("{tag}.{m}.selection")).0, KEY_DIM);
            let (shrinkage, _) = values(&cases, &format!("{tag}.{m}.shrinkage"));
            let (v, _) = values(&cases, &format!("{tag}.{m}.value"));
            let plane = VALUE_DIM * hw;
            let vals: Vec<(ObjectId, Tensor)> = (0..v.len() / plane)
                .map(|i| {
                    let t = tokens(&v[i * plane..(i + 1) * plane], VALUE_DIM);
                    (i as ObjectId + 1, token_tensor(t, VALUE_DIM))
                })
                .collect();
            let keys = FrameKeys {
                key: token_tensor(key, KEY_DIM),
                shrinkage: token_tensor(shrinkage, 1).flatten_all().unwrap(),
                selection: token_tensor(selection, KEY_DIM),
            };
            memory.add(&keys, &vals).unwrap();
        }
        let stored = memory.working_keys(0).unwrap();
        assert_eq!(tokens(&mk, KEY_DIM), host(stored.key), "{tag} memory keys");
        let (mv, _) = values(&cases, &format!("{tag}.readout.memory_value"));
        let stored_v = host(memory.working_values(1).unwrap());
        assert_eq!(
            tokens(&mv[..VALUE_DIM * n_mem], VALUE_DIM),
            stored_v,
            "{tag} memory values"
        );
        let out: Vec<f32> = memory
            .read(&token_tensor(qk, KEY_DIM), &token_tensor(qe, KEY_DIM))
            .unwrap()
            .into_iter()
            .flat_map(|(_, r)| host(&r))
            .collect();
        check(&cases, &tol, &tag, "readout.out", &out);

        // Decoder and segmentation head.
        let readout = get("readout.out").squeeze(0).unwrap();
        let sensory = get("seg.sensory_in").squeeze(0).unwrap();
        let mask16 = get("seg.last_mask16").squeeze(0).unwrap();
        let last = get("seg.last_mask");
        let (_, n, hp, wp) = last.dims4().unwrap();
        let last = last.reshape((n, 1, hp, wp)).unwrap();
        let skips = net.decoder_skips(&f).unwrap();
        let f16 = get("enc.f16");
        let d = net
            .decode(&f16, &skips, &readout, &sensory, &mask16, true, 0)
            .unwrap();
        check(&cases, &tol, &tag, "seg.decoder_logits", &host(&d.logits));
        check(
            &cases,
            &tol,
            &tag,
            "seg.sensory_out",
            &host(&d.sensory.unwrap()),
        );
        let (logits, prob, _) = net
            .segment(&f16, &skips, &readout, &sensory, &last, false, 1)
            .unwrap();
        check(&cases, &tol, &tag, "seg.logits", &host(&logits));
        let prob = host(&prob);
        check(&cases, &tol, &tag, "seg.prob", &prob);
        let unpadded: Vec<f32> = prob
            .chunks(pad.padded_len())
            .flat_map(|c| pad.unpad(c))
            .collect();
        check_as(
            &cases,
            &tol,
            &tag,
            "seg.prob_unpadded",
            &unpadded,
            "seg.prob",
        );
    }
}

/// Token-major values `[tokens][channels]` as a `[tokens, channels]` tensor.
fn token_tensor(v: Vec<f32>, channels: usize) -> Tensor {
    let n = v.len() / channels;
    Tensor::from_vec(v, (n, channels), &Device::Cpu).unwrap()
}
