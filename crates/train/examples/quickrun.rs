fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg = protoclr_train::config::load(None, &args[2..]).unwrap();
    let opts = protoclr_train::run::RunOptions {
        out_dir: args[1].clone().into(),
        checkpoint_dir: None,
        data_root: "/work/shared/datasets".into(),
        progress: protoclr_train::run::ProgressMode::Bar,
    };
    let t = std::time::Instant::now();
    let o = protoclr_train::run::train(&cfg, &opts).unwrap();
    println!("{}", serde_json::to_string_pretty(o.metrics()).unwrap());
    eprintln!("total {:.1}s", t.elapsed().as_secs_f64());
}
