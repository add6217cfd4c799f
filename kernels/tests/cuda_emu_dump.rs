//! Writes inputs and composed-reference outputs for tools/cuda_emu (a CPU emulation of the CUDA
//! kernels, run by tools/cuda_emu/run.sh). Ignored by default; needs TMCA_EMU_DIR.

mod common;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::{reference, Rng};
use std::io::Write;

fn dump(dir: &str, name: &str, t: &Tensor) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let v = common::to_f64(t)?;
    let mut f = std::fs::File::create(format!("{dir}/{name}.bin"))?;
    for x in v {
        f.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}
fn dims(dir: &str, d: &[usize]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        format!("{dir}/dims.txt"),
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )?;
    Ok(())
}

#[test]
#[ignore = "writes files for tools/cuda_emu/run.sh"]
fn dump_for_cuda_emulation() -> Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng::new(77);
    let root = std::env::var("TMCA_EMU_DIR").expect("TMCA_EMU_DIR");
    for (k, &(b, d, h, w)) in [(5usize, 37usize, 5usize, 7usize), (2, 260, 15, 20)]
        .iter()
        .enumerate()
    {
        let dir = format!("{root}/mp{k}");
        dims(&dir, &[b, d, h * w])?;
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F64, &dev)?)?;
        let m = common::masks(&mut rng, b, h, w, DType::F64, &dev)?;
        let wt = common::randn(&mut rng, &[b, d], DType::F64, &dev)?;
        let wb = common::randn(&mut rng, &[b, d], DType::F64, &dev)?;
        let (t, g, has) = reference::masked_pool_raw(&p, &m)?;
        let gr = ((&t * &wt)?.sum_all()? + (&g * &wb)?.sum_all()?)?.backward()?;
        for (n, x) in [
            ("p", p.as_tensor()),
            ("m", &m),
            ("wt", &wt),
            ("wb", &wb),
            ("target", &t),
            ("background", &g),
            ("has", &has),
            ("dp", gr.get(&p).unwrap()),
        ] {
            dump(&dir, n, x)?;
        }
    }
    for (k, &(b, d, h, w)) in [(3usize, 37usize, 5usize, 7usize), (2, 260, 15, 20)]
        .iter()
        .enumerate()
    {
        let dir = format!("{root}/ptc{k}");
        dims(&dir, &[b, d, h * w])?;
        let p = Var::from_tensor(&common::randn(&mut rng, &[b, d, h, w], DType::F64, &dev)?)?;
        let u = Var::from_tensor(&common::unit_rows(&mut rng, &[b, d], DType::F64, &dev)?)?;
        let wg = common::randn(&mut rng, &[b, 1, h, w], DType::F64, &dev)?;
        let c = reference::pixel_text_cos_raw(&p, &u)?;
        let gr = (&c * &wg)?.sum_all()?.backward()?;
        for (n, x) in [
            ("p", p.as_tensor()),
            ("u", u.as_tensor()),
            ("wg", &wg),
            ("cos", &c),
            ("dp", gr.get(&p).unwrap()),
            ("du", gr.get(&u).unwrap()),
        ] {
            dump(&dir, n, x)?;
        }
    }
    let mut k = 0;
    for &(lv, n, d) in &[(2usize, 9usize, 37usize), (1, 40, 260), (2, 1, 5)] {
        for bg in [true, false] {
            let dir = format!("{root}/cl{k}");
            k += 1;
            dims(&dir, &[lv, n, d, bg as usize])?;
            let mut emb = || -> Result<Var> {
                Var::from_tensor(&common::unit_rows(
                    &mut Rng::new(rng.next_u64()),
                    &[lv, n, d],
                    DType::F64,
                    &dev,
                )?)
            };
            let (t, x, v) = (emb()?, emb()?, emb()?);
            let has = common::tensor(
                (0..lv * n)
                    .map(|_| (rng.uniform() > 0.3) as u8 as f64)
                    .collect(),
                &[lv, n],
                DType::F64,
                &dev,
            )?;
            let sv: Vec<f64> = [100.0, 0.1].iter().cycle().take(lv).cloned().collect();
            let s = Var::from_tensor(&common::tensor(sv, &[lv], DType::F64, &dev)?)?;
            let groups: Vec<u64> = (0..n)
                .map(|_| rng.next_u64() % ((n as u64 / 3).max(1)))
                .collect();
            let (ids, cnt) = tmca_kernels::dense_groups(&groups);
            let mut aux: Vec<f64> = ids.iter().map(|&g| g as f64).collect();
            aux.extend(cnt.iter().map(|&c| c as f64));
            aux.extend(common::to_f64(&has)?);
            let wl = common::randn(&mut rng, &[lv], DType::F64, &dev)?;
            let loss = reference::multi_level(&t, &x, &v, &has, &s, &groups, bg)?;
            let gr = (&loss * &wl)?.sum_all()?.backward()?;
            let emb_all = Tensor::stack(&[t.as_tensor(), x.as_tensor(), v.as_tensor()], 0)?;
            let zero = |var: &Var| gr.get(var).cloned().unwrap_or(var.zeros_like().unwrap());
            let demb = Tensor::stack(&[zero(&t), zero(&x), zero(&v)], 0)?;
            for (nme, y) in [
                ("emb", &emb_all),
                ("scales", s.as_tensor()),
                ("aux", &Tensor::new(aux, &dev)?),
                ("wl", &wl),
                ("loss", &loss),
                ("demb", &demb),
                ("dscales", &zero(&s)),
            ] {
                dump(&dir, nme, y)?;
            }
        }
    }
    Ok(())
}
