fn main() {
    let args: Vec<String> = std::env::args().collect();
    let width: usize = args[1].parse().unwrap();
    let batch: usize = args[2].parse().unwrap();
    let ops = args[3].clone();
    let cfg = protoclr_train::config::ModelConfig { width, ops, ..Default::default() };
    let r = protoclr_train::bench::step(&cfg, batch, 3, 1).unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
}
