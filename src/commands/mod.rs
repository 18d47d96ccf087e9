pub mod capture;
pub mod corpus;
pub mod eval;
pub mod generate;
pub mod lat;
pub mod sweep;
pub mod train_mini;
