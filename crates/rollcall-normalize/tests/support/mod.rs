pub mod grand_bend;
