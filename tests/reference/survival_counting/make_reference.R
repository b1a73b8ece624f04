# Frozen R references for Cox models on counting-process (start, stop] data (tests/test_survival_counting_golden.py).
# Run from this directory: Rscript make_reference.R   (needs survival >= 3.0 and jsonlite)
#
# Data:
#   heart.csv      R survival's `heart` (Stanford heart transplant, jasa1): start, stop, event, age, year, surgery,
#                  transplant; transplant is time-varying (a patient has a row before and one after the transplant).
#   maintenance.csv  simulated like the response-durability model: loss of response by day, whole days (many ties),
#                  maintenance switching on at a day that is often also another patient's event day (entry ties).
# Models (Efron ties, R defaults; eps tightened so that R's estimate is the exact maximum to ~1e-12):
#   heart:       coxph(Surv(start, stop, event) ~ age + year + surgery + transplant)
#   maintenance: coxph(Surv(start, stop, event) ~ maintenance)
# Frozen: coef, se (sqrt of vcov diagonal), loglik (null, fitted), n, nevent.
library(survival)
library(jsonlite)

write.csv(heart[, c("start", "stop", "event", "age", "year", "surgery", "transplant")], "heart.csv",
          row.names = FALSE)
heart_csv <- read.csv("heart.csv")
heart_csv$transplant <- as.numeric(heart_csv$transplant)  # "0"/"1" factor in R: a 0/1 column here

set.seed(21)
n <- 400
end <- pmax(1, round(rexp(n, 1 / 60)))
lost <- rbinom(n, 1, 0.7)
m <- ifelse(runif(n) < 0.5, sample(1:90, n, replace = TRUE), NA)
split <- !is.na(m) & m < end
before <- data.frame(start = 0, stop = ifelse(split, m, end), maintenance = 0, event = ifelse(split, 0, lost))
after <- data.frame(start = m[split], stop = end[split], maintenance = 1, event = lost[split])
maint <- rbind(before, after)
write.csv(maint, "maintenance.csv", row.names = FALSE)

ctl <- coxph.control(eps = 1e-14, toler.chol = 1e-15, iter.max = 100)
out <- list(meta = list(R = R.version.string, survival = as.character(packageVersion("survival"))))
fits <- list(
  heart = coxph(Surv(start, stop, event) ~ age + year + surgery + transplant, data = heart_csv, ties = "efron",
                control = ctl),
  maintenance = coxph(Surv(start, stop, event) ~ maintenance, data = maint, ties = "efron", control = ctl))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(columns = names(coef(f)), coef = unname(coef(f)), se = unname(sqrt(diag(vcov(f)))),
                      loglik = f$loglik, n = f$n, nevent = f$nevent)
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "reference.json")
